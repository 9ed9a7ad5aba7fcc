package pubsub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/roomcast/pubsub/internal/stack"
	"github.com/roomcast/pubsub/internal/stats"
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
// "not allowed" (the host's 401 or 403) from "network down". A POST of
// {"type":"refresh","conn":id} (application/json) refreshes a connection's
// session: it has passed the host's middleware again, which names the new
// expiry with ContextWithExpiry (see it, and PROTOCOL.md section 11). A
// host that serves connections with Accept routes POSTs on its path here.
func (b *Broker) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if serveClientFile(w, r) {
			return
		}
		switch r.Method {
		case http.MethodHead:
			b.probe(w, r)
			return
		case http.MethodPost:
			b.servePost(w, r)
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
	if ends := ExpiryFromContext(r.Context()); !ends.IsZero() && !ends.After(time.Now()) {
		w.Header().Set("Roomcast-Error", "session_expired")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	q, err := b.connQuery(r)
	code := ""
	switch {
	case err != nil:
		code = queryErrorCode(err)
	case q.Get("last_event_id") != "" && b.hist != nil:
		if _, err := parsePosition(q.Get("last_event_id")); err != nil {
			code = "invalid_id"
		}
	}
	if code != "" { // what the connection would get, for a client that only saw it fail
		w.Header().Set("Roomcast-Error", code)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	c := b.newConn(context.WithoutCancel(r.Context()), UserFromContext(r.Context()))
	defer c.cancel()
	if c.refuseRooms(w, r, q["room"]) == nil {
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
		b.logRefused(r, "transport", "neither a WebSocket upgrade nor an event stream request")
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
			b.logRefused(r, "user", "the host's middleware named an invalid user id: "+err.Error())
			http.Error(w, "invalid user id: "+err.Error(), http.StatusBadRequest)
			return nil, fmt.Errorf("%w: %v", ErrInvalidUser, err)
		}
	}
	if ends := ExpiryFromContext(r.Context()); !ends.IsZero() && !ends.After(time.Now()) {
		b.logRefused(r, "expiry", "a connection whose session expired (the host's middleware gave an expiry in the past)")
		w.Header().Set("Roomcast-Error", "session_expired")
		http.Error(w, "session expired", http.StatusUnauthorized)
		return nil, ErrSessionExpired
	}
	q, err := b.connQuery(r)
	if err != nil {
		code := queryErrorCode(err)
		b.logRefused(r, code, "a connection with "+err.Error())
		w.Header().Set("Roomcast-Error", code)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, err
	}
	rooms := q["room"]
	ctx := context.WithoutCancel(r.Context())
	if ws {
		return b.acceptWebSocket(w, r, ctx, user, rooms)
	}
	return b.acceptSSE(w, r, ctx, user, rooms, detached)
}

// start registers a new connection, greets it and subscribes it to its
// user's messages.
func (b *Broker) start(c *Conn) error {
	if err := b.register(c); err != nil {
		if c.keepalive != nil {
			c.keepalive.Stop()
		}
		return err
	}
	welcome := wire.Welcome(c.id, c.user)
	if c.user == "" {
		c.reply(welcome)
	} else if err := c.joinUser(welcome); err != nil {
		b.log.Error("pubsub: subscribing user", "user", c.user, "err", err)
		c.closeWith(CloseInternalError, "internal error", err, false)
		if c.sse == nil || c.sse.conn == nil { // a hijacked stream finishes by itself
			c.serve(nil) // wind the connection down before returning
		}
		return err
	}
	if c.lease != nil {
		c.lease.start()
	}
	c.openInbox()
	return nil
}

// keepAlive pings the WebSocket peer and closes the connection if it does
// not answer in time; on a hijacked SSE stream it checks that the client is
// still there and sends a comment line. It runs on a timer, so an idle
// connection holds no goroutine for it.
func (c *Conn) keepAlive() {
	if !c.busy() {
		return
	}
	defer c.bg.Done()

	if c.ws != nil {
		ctx, cancel := context.WithTimeout(c.ctx, c.b.cfg.pongTimeout)
		err := c.ws.ws.Ping(ctx)
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
		c.keepalive.Reset(c.b.cfg.keepAlive)
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

// refuseOrigin answers a cross-origin request the origin patterns do not
// allow: 403, counted, and logged at Warn.
func (b *Broker) refuseOrigin(w http.ResponseWriter, r *http.Request) error {
	b.stats.Deny(stats.DeniedOrigin)
	origin := truncate(r.Header.Get("Origin"))
	b.logRefused(r, "origin", "a page from another origin ("+origin+"); allow it with WithOriginPatterns")
	http.Error(w, "origin not allowed", http.StatusForbidden)
	return fmt.Errorf("%w: origin %q", ErrForbidden, origin)
}

// logRefused logs a refused connection at Warn: one line per reason every
// 10 s, so that a misbehaving client cannot flood the log.
// The limit is per cause, a fixed word the caller names, so that a client
// varying the detail in reason (an Origin header) cannot make lines of its
// own.
func (b *Broker) logRefused(r *http.Request, cause, reason string) {
	if ok, suppressed := b.logNoisy.Allow("refused:" + cause); ok {
		b.log.Warn("pubsub: refused a live connection", "reason", reason, "path", r.URL.Path, "remote", r.RemoteAddr, "suppressed", suppressed)
	}
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

// presenceRooms reads the "presence" query parameters: the rooms, among
// those subscribed at connect time, whose join and leave events the client
// wants.
func presenceRooms(r *http.Request) map[string]bool {
	rooms := r.URL.Query()["presence"]
	if len(rooms) == 0 {
		return nil
	}
	m := make(map[string]bool, len(rooms))
	for _, room := range rooms {
		m[room] = true
	}
	return m
}

// connQuery parses and checks a connection's query, for accept and for the
// probe alike. Parsed here, not with r.URL.Query(), which drops a query
// Go's parser refuses (more than 10,000 parameters, a ';') and leaves a
// connection without rooms.
func (b *Broker) connQuery(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidQuery, err)
	}
	if v := q.Get("protocol"); v != "" && v != strconv.Itoa(wire.Protocol) {
		return nil, fmt.Errorf("%w %q: this server speaks protocol %d", ErrUnsupportedProtocol, truncate(v), wire.Protocol)
	}
	if n := len(q["room"]); n > b.cfg.maxRooms {
		return nil, fmt.Errorf("%w: %d rooms in the query, the limit is %d", ErrTooManyRooms, n, b.cfg.maxRooms)
	}
	return q, nil
}

// queryErrorCode is the Roomcast-Error code of a connQuery error.
func queryErrorCode(err error) string {
	switch {
	case errors.Is(err, ErrUnsupportedProtocol):
		return "unsupported_protocol"
	case errors.Is(err, ErrTooManyRooms):
		return "too_many_rooms"
	}
	return "bad_request"
}
