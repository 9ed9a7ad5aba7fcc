package pubsub

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub/internal/stack"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Handler returns the http.Handler that serves clients: a WebSocket upgrade
// request becomes a WebSocket connection, a GET that accepts
// text/event-stream becomes an SSE stream, on the same path. Mount it behind
// the host's own middleware; the user stored with ContextWithUser is the
// connection's identity. Query parameters "room" (repeatable) subscribe at
// connect time, "presence" (repeatable) asks for those rooms' presence
// events. See PROTOCOL.md for the frames.
//
// The same handler serves the browser client at <mount>/client.js (and
// client.d.ts) when routed there. The client is a public static file: mount
// that one path without the login middleware, so a logged-out page can load
// it, and not the whole subtree:
//
//	mux.Handle("/live", requireLogin(ps.Handler()))
//	mux.Handle("GET /live/client.js", ps.Handler())
//
// HEAD is answered with 204, so a client whose connection failed can tell
// "not allowed" (the host's 401 or 403) from "network down".
func (b *Broker) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if serveClientFile(w, r) {
			return
		}
		if r.Method == http.MethodHead {
			b.probe(w, r)
			return
		}
		c, err := b.accept(w, r, !b.cfg.holdRequests)
		if err != nil {
			return
		}
		switch {
		case c.ws != nil && !b.cfg.holdRequests:
			// A hijacked connection outlives its handler. Reading in a new
			// goroutine lets net/http free the request, the response and
			// this goroutine's deep stack: a third of an idle connection.
			go c.serve(nil)
		case c.ws != nil, c.sse.conn == nil: // held, or HTTP/2: the handler stays
			_ = c.Wait()
		}
		// A hijacked SSE stream needs no goroutine at all while idle.
	})
}

// probe answers HEAD: 204, or the error an SSE request with the same query
// rooms would get (see refuseRooms).
func (b *Broker) probe(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if chain := stack.Inspect(w); !sseWorks(chain, r, !b.cfg.holdRequests) {
		_ = b.refuseStack(w, r, "SSE", chain) // the transport of last resort: a client must not retry
		return
	}
	c := b.newConn(context.WithoutCancel(r.Context()), UserFromContext(r.Context()))
	defer c.cancel()
	if c.refuseRooms(w, r.URL.Query()["room"]) == nil {
		w.WriteHeader(http.StatusNoContent)
	}
}

// Accept turns the request into a connection, WebSocket or SSE alike, for a
// host handler that drives it itself:
//
//	c, err := ps.Accept(w, r)
//	if err != nil {
//		return // Accept has written the HTTP error
//	}
//	c.Join("game:42")
//	for msg := range c.Messages() { ... c.Send(ctx, reply) ... }
//
// Rooms named in the query are validated and authorized first: for SSE an
// invalid room is a 400 and a denied one a 403 before the stream starts; for
// WebSocket each is answered with an error frame after the upgrade. On error
// Accept has written the response and returns nil; ErrUnsupportedTransport,
// ErrClosed (503), ErrMisconfigured (500: the host's middleware hides the
// connection; logged at Error with the fix) and origin or upgrade failures
// are the possible causes. The caller must then range over Messages or call
// Wait.
//
// A deadline on the request's context (a middleware's request timeout,
// such as chi's) does not end the connection; Conn.Close does.
func (b *Broker) Accept(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	return b.accept(w, r, false)
}

// accept is Accept; detached lets an HTTP/1.x SSE stream be hijacked, for
// the broker's own handler, which does not drive its connections.
func (b *Broker) accept(w http.ResponseWriter, r *http.Request, detached bool) (*Conn, error) {
	ws := isWebSocket(r)
	if !ws && !(r.Method == http.MethodGet && acceptsEventStream(r)) {
		http.Error(w, "expected a WebSocket upgrade or a GET with Accept: text/event-stream", http.StatusBadRequest)
		return nil, ErrUnsupportedTransport
	}
	b.mu.Lock()
	closing := b.closing
	b.mu.Unlock()
	if closing {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return nil, ErrClosed
	}
	user := UserFromContext(r.Context())
	if user != "" {
		if err := subject.ValidUser(user); err != nil {
			http.Error(w, "invalid user id: "+err.Error(), http.StatusBadRequest)
			return nil, fmt.Errorf("%w: %v", ErrInvalidUser, err)
		}
	}
	rooms := r.URL.Query()["room"]
	if len(rooms) > b.cfg.maxRooms {
		http.Error(w, ErrTooManyRooms.Error(), http.StatusBadRequest)
		return nil, ErrTooManyRooms
	}
	ctx := context.WithoutCancel(r.Context())
	if ws {
		return b.acceptWebSocket(w, r, ctx, user, rooms)
	}
	return b.acceptSSE(w, r, ctx, user, rooms, detached)
}

func (b *Broker) acceptWebSocket(w http.ResponseWriter, r *http.Request, ctx context.Context, user string, rooms []string) (*Conn, error) {
	chain := stack.Inspect(w)
	if !chain.CanHijack {
		return nil, b.refuseStack(w, r, "WebSocket", chain)
	}
	hj := &smallBuffers{ResponseWriter: w, timeout: b.cfg.writeTimeout}
	ws, err := websocket.Accept(hj, r, &websocket.AcceptOptions{
		OriginPatterns:  b.cfg.originPatterns,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if hj.hijackErr != nil { // Accept answered 500, with our Roomcast-Error
			cause, fix := chain.HijackFailed(hj.hijackErr)
			return nil, b.logMisconfigured(r, "WebSocket", chain, cause, fix)
		}
		return nil, err // Accept wrote the response (403 for a foreign origin)
	}
	ws.SetReadLimit(int64(b.cfg.maxMessage))
	c := b.newConn(ctx, user)
	c.ws, c.netConn, c.fw = ws, hj.conn, hj.fw
	c.ping = time.AfterFunc(b.cfg.keepAlive, c.keepAlive)
	if err := b.start(c); err != nil {
		_ = ws.Close(websocket.StatusCode(CloseServiceRestart), "service restart")
		return nil, err
	}
	watch := presenceRooms(r)
	for _, room := range rooms {
		c.clientSubscribe(room, "", watch[room], nil)
	}
	return c, nil
}

// Buffer sizes of a WebSocket connection. net/http hands a hijacker 4 KiB
// for each direction, kept for the connection's life: most of an idle
// connection's memory. Client frames are small; a server frame larger than
// the write buffer costs one more write call (frames are joined under load,
// so such frames are large anyway).
var (
	wsReadBuffer  = 512
	wsWriteBuffer = 2048
)

// smallBuffers is the ResponseWriter websocket.Accept sees. It makes the
// upgrade independent of how the host's middleware treats a status: it
// holds the 101 back from the writers in front of the connection, takes
// the connection over through them (Hijack, found through Unwrap), and
// writes the response head itself. Wrappers that delay WriteHeader (gin's,
// compressing ones) would otherwise never send the 101, and a compressing
// one could announce an encoding the upgraded connection does not have.
//
// It also swaps net/http's 4 KiB buffers for smaller ones, and keeps the
// net.Conn: write deadlines set on it cost no allocation, where a context
// per write costs several.
type smallBuffers struct {
	http.ResponseWriter
	timeout   time.Duration
	upgrade   bool  // WriteHeader(101) was called and held back
	hijackErr error // the host's writers refused the connection
	conn      net.Conn
	fw        *frameWriter
}

func (w *smallBuffers) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *smallBuffers) WriteHeader(code int) {
	if code == http.StatusSwitchingProtocols {
		w.upgrade = true
		return
	}
	w.ResponseWriter.WriteHeader(code) // a refusal: the host's writers see it as usual
}

func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !w.upgrade {
		return nil, nil, errors.New("pubsub: hijack before the upgrade's status")
	}
	conn, brw, err := hijack(w.ResponseWriter)
	if err != nil {
		w.hijackErr = err
		w.Header().Set("Roomcast-Error", "misconfigured") // on the 500 websocket.Accept answers
		return nil, nil, err
	}
	w.conn = conn
	// net/http was never given a status, so it wrote nothing: the head is
	// ours to write. brw.Writer is left unused.
	_ = conn.SetWriteDeadline(time.Now().Add(w.timeout))
	_, err = conn.Write(stack.Head("HTTP/1.1", http.StatusSwitchingProtocols, w.Header()))
	_ = conn.SetWriteDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	// Bytes the client sent right after its request must stay in the new
	// reader's buffer: websocket.Accept takes them from there.
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(wsReadBuffer, len(early)))
	if len(early) > 0 {
		_, _ = br.Peek(len(early))
	}
	w.fw = &frameWriter{conn: conn}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(w.fw, wsWriteBuffer)), nil
}

// hijack takes the connection over through the host's writers. A wrapper
// may offer Hijack and then fail, or panic (gin's does when the writer
// behind it cannot): both are an error here.
func hijack(w http.ResponseWriter) (conn net.Conn, brw *bufio.ReadWriter, err error) {
	defer func() {
		if p := recover(); p != nil {
			conn, brw, err = nil, nil, fmt.Errorf("the host's Hijack panicked: %v", p)
		}
	}()
	return http.NewResponseController(w).Hijack()
}

// frameWriter sits under the WebSocket library's write buffer. A frame
// larger than that buffer reaches the socket as two writes (the buffer with
// the frame header, then the rest); while the connection's writer sends a
// batch, frameWriter holds the first and sends both with one writev. One
// system call per frame, whatever its size, without a larger buffer per
// connection.
type frameWriter struct {
	conn net.Conn

	mu       sync.Mutex
	batching bool
	held     *[]byte
}

var heldPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (f *frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.batching {
		return f.conn.Write(p)
	}
	if f.held == nil {
		f.held = heldPool.Get().(*[]byte)
		*f.held = append((*f.held)[:0], p...)
		return len(p), nil
	}
	bufs := net.Buffers{*f.held, p}
	_, err := bufs.WriteTo(f.conn)
	f.putHeld()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// hold starts a batch; release ends it, writing anything still held.
func (f *frameWriter) hold() {
	f.mu.Lock()
	f.batching = true
	f.mu.Unlock()
}

func (f *frameWriter) release() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batching = false
	if f.held == nil {
		return nil
	}
	_, err := f.conn.Write(*f.held)
	f.putHeld()
	return err
}

func (f *frameWriter) putHeld() {
	if cap(*f.held) <= 2*wsWriteBuffer {
		heldPool.Put(f.held)
	}
	f.held = nil
}

// start registers a new connection, greets it and subscribes it to its
// user's messages.
func (b *Broker) start(c *Conn) error {
	if err := b.register(c); err != nil {
		if c.ping != nil {
			c.ping.Stop()
		}
		return err
	}
	c.reply(wire.Welcome(c.id, c.user))
	if c.user != "" {
		if err := c.joinUser(); err != nil {
			b.log.Error("pubsub: subscribing user", "user", c.user, "err", err)
			c.closeWith(CloseInternalError, "internal error", err, false)
			if c.sse == nil || c.sse.conn == nil { // a hijacked stream finishes by itself
				c.serve(nil) // wind the connection down before returning
			}
			return err
		}
	}
	return nil
}

// readLoop reads client frames until the connection ends.
func (c *Conn) readLoop(yield func([]byte) bool) {
	for {
		typ, p, err := c.ws.Read(c.ctx)
		if err != nil {
			c.closeWith(CloseNormal, "", readError(err), false)
			return
		}
		if typ != websocket.MessageText {
			c.reply(wire.Error("unsupported", "binary frames are not supported", "", nil))
			continue
		}
		if !c.handleFrame(p, yield) {
			c.closeWith(CloseNormal, "", nil, true)
			return
		}
	}
}

// readError maps the end of a WebSocket read to Conn.Err: nil for a normal
// close by either side.
func readError(err error) error {
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("pubsub: read: %w", err)
}

// handleFrame acts on one client frame. It returns false when the host's
// Messages loop stopped.
func (c *Conn) handleFrame(p []byte, yield func([]byte) bool) bool {
	f, err := wire.ParseClientFrame(p)
	if err != nil {
		c.reply(wire.Error("bad_request", err.Error(), "", f.Ref))
		return true
	}
	switch f.Type {
	case "subscribe":
		c.clientSubscribe(f.Room, f.LastID, f.Presence, f.Ref)
	case "unsubscribe":
		if err := subject.ValidRoom(f.Room); err != nil {
			c.reply(wire.Error("invalid_room", "invalid room name: "+err.Error(), truncate(f.Room), f.Ref))
			return true
		}
		_ = c.leave(f.Room, wire.Reply("unsubscribed", f.Room, "", f.Ref))
	case "publish":
		c.clientPublish(f)
	case "send":
		if yield == nil {
			c.reply(wire.Error("unsupported", "this endpoint takes no send frames", "", f.Ref))
			return true
		}
		data, ok := wire.CompactJSON(f.Data)
		if !ok || len(f.Data) == 0 {
			c.reply(wire.Error("bad_request", `"data" must be a JSON value`, "", f.Ref))
			return true
		}
		return yield(data)
	case "history":
		c.clientHistory(f)
	case "presence":
		c.clientPresence(f)
	case "ping":
		c.reply(wire.Reply("pong", "", "", f.Ref))
	default:
		c.reply(wire.Error("bad_request", "unknown frame type", "", f.Ref))
	}
	return true
}

func (c *Conn) clientSubscribe(room, lastID string, presence bool, ref []byte) {
	if err := subject.ValidRoom(room); err != nil {
		c.reply(wire.Error("invalid_room", "invalid room name: "+err.Error(), truncate(room), ref))
		return
	}
	if err := c.authorize(c.b.cfg.authSubscribe, "subscribe", room); err != nil {
		c.reply(wire.Error("forbidden", "not allowed to subscribe to this room", room, ref))
		return
	}
	var pos uint64
	if _, history := c.b.historyFor(room); history && lastID != "" {
		var err error
		if pos, err = parsePosition(lastID); err != nil {
			c.reply(wire.Error("invalid_id", err.Error(), room, ref))
			return
		}
	}
	t, added, err := c.joinTopic(room, wire.Reply("subscribed", room, "", ref), pos > 0)
	if added && pos > 0 {
		c.startResume(map[*topic]string{t: room}, pos, ref)
	}
	if err == nil && presence {
		err = c.b.pres.watch(c, room)
	}
	switch {
	case err == nil, errors.Is(err, ErrClosed):
	case errors.Is(err, ErrTooManyRooms):
		c.reply(wire.Error("too_many_rooms", fmt.Sprintf("at most %d rooms per connection", c.b.cfg.maxRooms), room, ref))
	default:
		c.b.log.Error("pubsub: subscribe", "room", room, "err", err)
		c.reply(wire.Error("internal", "subscribe failed", room, ref))
	}
}

func (c *Conn) clientPublish(f wire.ClientFrame) {
	if c.b.cfg.authPublish == nil {
		c.reply(wire.Error("forbidden", "client publish is disabled", truncate(f.Room), f.Ref))
		return
	}
	if err := subject.ValidRoom(f.Room); err != nil {
		c.reply(wire.Error("invalid_room", "invalid room name: "+err.Error(), truncate(f.Room), f.Ref))
		return
	}
	if len(f.Data) == 0 {
		c.reply(wire.Error("bad_request", `"data" must be a JSON value`, f.Room, f.Ref))
		return
	}
	if err := c.authorize(c.b.cfg.authPublish, "publish", f.Room); err != nil {
		c.reply(wire.Error("forbidden", "not allowed to publish to this room", f.Room, f.Ref))
		return
	}
	ack, err := c.b.publishRoom(c.ctx, f.Room, c.user, f.Data)
	if err != nil {
		c.b.log.Error("pubsub: client publish", "room", f.Room, "err", err)
		c.reply(wire.Error("internal", "publish failed", f.Room, f.Ref))
		return
	}
	if len(f.Ref) > 0 {
		c.reply(wire.Reply("published", f.Room, ack.ID, f.Ref))
	}
}

// clientHistory answers a "history" frame: the room's recent stored
// messages, authorized like a subscription.
func (c *Conn) clientHistory(f wire.ClientFrame) {
	if err := subject.ValidRoom(f.Room); err != nil {
		c.reply(wire.Error("invalid_room", "invalid room name: "+err.Error(), truncate(f.Room), f.Ref))
		return
	}
	if err := c.authorize(c.b.cfg.authSubscribe, "history", f.Room); err != nil {
		c.reply(wire.Error("forbidden", "not allowed to read this room", f.Room, f.Ref))
		return
	}
	if f.Limit < 0 || f.Limit > maxClientHistory {
		c.reply(wire.Error("bad_request", fmt.Sprintf(`"limit" must be 0 to %d`, maxClientHistory), f.Room, f.Ref))
		return
	}
	limit := f.Limit
	if limit == 0 {
		limit = defaultClientHistory
	}
	msgs, err := c.b.History(c.ctx, f.Room, limit)
	switch {
	case errors.Is(err, ErrNoHistory):
		c.reply(wire.Error("no_history", "this room keeps no history", f.Room, f.Ref))
		return
	case err != nil:
		c.b.log.Error("pubsub: history", "room", f.Room, "err", err)
		c.reply(wire.Error("internal", "history failed", f.Room, f.Ref))
		return
	}
	stored := make([]wire.Stored, len(msgs))
	for i, m := range msgs {
		stored[i] = wire.Stored{ID: m.ID, From: m.From, Data: m.Data, Time: m.Time}
	}
	c.reply(wire.HistoryFrame(f.Room, stored, f.Ref))
}

// A client's history request: 50 messages unless it asks, at most 100 (one
// frame holds them all).
const (
	defaultClientHistory = 50
	maxClientHistory     = 100
)

// authorize runs hook (nil allows everything) and logs a denial.
func (c *Conn) authorize(hook AuthorizeFunc, action, room string) error {
	if hook == nil {
		return nil
	}
	if err := hook(c.ctx, c.user, room); err != nil {
		c.b.log.Debug("pubsub: denied", "action", action, "room", room, "user", c.user, "err", err)
		return fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	return nil
}

// keepAlive pings the WebSocket peer and closes the connection if it does
// not answer in time; on a hijacked SSE stream it checks that the client is
// still there and sends a comment line. It runs on a timer, so an idle
// connection holds no goroutine for it.
func (c *Conn) keepAlive() {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.bg.Add(1)
	c.mu.Unlock()
	defer c.bg.Done()

	if c.ws != nil {
		ctx, cancel := context.WithTimeout(c.ctx, c.b.cfg.pongTimeout)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			c.closeWith(CloseIdleTimeout, "ping timeout", ErrIdleTimeout, false)
			return
		}
	} else if !c.sse.keepAlive(c) {
		return
	}
	c.mu.Lock()
	if !c.closing {
		c.ping.Reset(c.b.cfg.keepAlive)
	}
	c.mu.Unlock()
}

func isWebSocket(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/event-stream") {
			return true
		}
	}
	return false
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// originAllowed applies the WebSocket origin rule to SSE: no Origin header
// (same-origin EventSource, curl) or the request's own host passes, as does
// a host matching a configured pattern.
func (b *Broker) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range b.cfg.originPatterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}
