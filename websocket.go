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
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub/internal/protocol"
	"github.com/roomcast/pubsub/internal/stack"
	"github.com/roomcast/pubsub/internal/wire"
)

func (b *Broker) acceptWebSocket(w http.ResponseWriter, r *http.Request, ctx context.Context, user string, rooms []string) (*Conn, error) {
	if !b.originAllowed(r) {
		return nil, b.refuseOrigin(w, r)
	}
	chain := stack.Inspect(w)
	if !chain.CanHijack {
		return nil, b.refuseStack(w, r, "WebSocket", chain)
	}
	hj := &smallBuffers{ResponseWriter: w, timeout: b.cfg.writeTimeout}
	opts := &websocket.AcceptOptions{OriginPatterns: b.cfg.originPatterns, CompressionMode: websocket.CompressionDisabled}
	if b.cfg.compress { // WithCompression; the library reads a threshold of 0 as its default, 512
		opts.CompressionMode, opts.CompressionThreshold = websocket.CompressionNoContextTakeover, max(b.cfg.compressMin, 1)
	}
	ws, err := websocket.Accept(hj, r, opts)
	if err != nil {
		if hj.hijackErr != nil { // Accept answered 500, with our Roomcast-Error
			cause, fix := chain.HijackFailed(hj.hijackErr)
			return nil, b.logMisconfigured(r, "WebSocket", chain, cause, fix)
		}
		b.logRefused(r, "handshake", "a WebSocket handshake that failed: "+err.Error())
		return nil, err // Accept wrote the response
	}
	ws.SetReadLimit(int64(b.cfg.maxMessage))
	c := b.newConn(ctx, user)
	c.ws = &wsConn{c: c, ws: ws, netConn: hj.conn, fw: hj.fw}
	c.attach(c.ws)
	c.keepalive = time.AfterFunc(b.cfg.keepAlive, c.keepAlive)
	if err := b.start(c); err != nil {
		_ = ws.Close(websocket.StatusCode(CloseServiceRestart), "service restart")
		return nil, err
	}
	watch := presenceRooms(r)
	for _, room := range rooms {
		protocol.Subscribe(session{c: c}, room, "", watch[room], nil)
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

// wsConn is the WebSocket transport of a Conn: it reads client frames into
// the protocol, and writes the connection's queue (fanout.Sink).
type wsConn struct {
	c       *Conn
	ws      *websocket.Conn
	netConn net.Conn     // the socket, for write deadlines
	fw      *frameWriter // under the WebSocket's write buffer
}

// readLoop reads client frames until the connection ends.
func (w *wsConn) readLoop(c *Conn, yield func([]byte) bool) {
	s := session{c: c, yield: yield}
	for {
		typ, p, err := w.ws.Read(c.ctx)
		if err != nil {
			c.closeWith(CloseNormal, "", readError(err), false)
			return
		}
		if typ != websocket.MessageText {
			c.reply(wire.Error(protocol.Unsupported, "binary frames are not supported", "", nil))
			continue
		}
		if !utf8.Valid(p) { // RFC 6455 §8.1: a text message must be UTF-8; fail the connection
			c.closeWith(CloseInvalidData, "text frame is not valid UTF-8", errInvalidUTF8, true) // after the answers to earlier frames
			return
		}
		if !protocol.Handle(s, p) {
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

// WriteEnd ends the connection with its close code. A peer that does not
// answer the close frame (dead, or not reading) is cut off at the socket,
// which also ends the reader, if any.
func (w *wsConn) WriteEnd() {
	code, reason := w.c.closeInfo()
	force := time.AfterFunc(closeHandshakeTimeout, func() { _ = w.netConn.Close() })
	_ = w.ws.Close(websocket.StatusCode(code), reason)
	force.Stop()
}

// WriteFailed closes a connection whose write failed.
func (w *wsConn) WriteFailed(err error) {
	w.c.closeWith(CloseInternalError, "write failed", fmt.Errorf("pubsub: write: %w", err), false)
	_ = w.netConn.Close()
}

// closeHandshakeTimeout bounds how long a closing WebSocket waits for the
// peer's close frame.
const closeHandshakeTimeout = 2 * time.Second

// maxBatchBytes caps a joined WebSocket message. Joining saves a syscall and
// a frame header per message; the cap keeps one write short.
const maxBatchBytes = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatchBytes); return &b }}

// WriteBatch writes the queued frames as one WebSocket message where they
// fit, joined by newlines (PROTOCOL.md §3).
func (w *wsConn) WriteBatch(batch []*wire.Frame) error {
	// The deadline is on the socket, and cleared after, so that the
	// library's own control frames (pongs, close) never meet a stale one.
	ctx := context.Background()
	_ = w.netConn.SetWriteDeadline(time.Now().Add(w.c.b.cfg.writeTimeout))
	defer w.netConn.SetWriteDeadline(time.Time{})
	w.fw.hold()
	n, err := w.writeFrames(ctx, batch)
	if ferr := w.fw.release(); err == nil {
		err = ferr
	}
	if err == nil {
		w.c.b.stats.Wrote(n, len(batch), born(batch))
	}
	return err
}

// born is when the batch's oldest message was fanned out (0: none was).
func born(batch []*wire.Frame) int64 {
	for _, f := range batch {
		if f.Born != 0 {
			return f.Born
		}
	}
	return 0
}

// writeFrames writes the batch and returns the payload bytes written.
func (w *wsConn) writeFrames(ctx context.Context, batch []*wire.Frame) (int, error) {
	if len(batch) == 1 {
		return len(batch[0].JSON), w.ws.Write(ctx, websocket.MessageText, batch[0].JSON)
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	buf := (*bp)[:0]
	n := 0
	for _, f := range batch {
		if len(buf) > 0 && len(buf)+1+len(f.JSON) > maxBatchBytes {
			if err := w.ws.Write(ctx, websocket.MessageText, buf); err != nil {
				return n, err
			}
			n += len(buf)
			buf = buf[:0]
		}
		if len(buf) > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, f.JSON...)
	}
	err := w.ws.Write(ctx, websocket.MessageText, buf)
	n += len(buf)
	if cap(buf) <= 2*maxBatchBytes { // an oversized single frame grew it: drop it
		*bp = buf[:0]
	}
	return n, err
}
