package pubsub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/stack"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// sseRetryMillis is the reconnection delay an EventSource is told to use.
const sseRetryMillis = 2000

// sseStream is the SSE side of a Conn, in one of two shapes.
//
// Driven: the handler goroutine is the writer (an SSE response must be
// written by the handler that owns it) and waits on wake; used by Accept,
// whose caller drives the connection, and over HTTP/2.
//
// Hijacked (conn != nil): the broker's own handler takes the HTTP/1.x
// connection over, writes the response head itself and delimits the body
// by closing the connection. Then, like a WebSocket, it has a writer
// goroutine only while there is something to write, one write call per
// batch, and no goroutine at all while idle.
type sseStream struct {
	c       *Conn
	w       http.ResponseWriter
	rc      *http.ResponseController
	reqCtx  context.Context // the request's own, cancelled when a driven stream's client leaves
	chain   stack.Chain
	aborted atomic.Bool

	conn      net.Conn     // hijacked
	lastWrite atomic.Int64 // unix nanoseconds, for keep-alives on a hijacked stream
	ends      time.Time    // its maximum age (WithSSEMaxAge); zero: none

	mu   sync.Mutex
	done bool // the handler returned: rc must not be used any more
}

// finished records that the stream's handler is done with the response.
func (s *sseStream) finished() {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
}

var sseHeaders = http.Header{
	"Content-Type":      {"text/event-stream"},
	"Cache-Control":     {"no-cache"},
	"X-Accel-Buffering": {"no"}, // nginx must not buffer the stream
}

func (b *Broker) acceptSSE(w http.ResponseWriter, r *http.Request, ctx context.Context, user string, rooms []string, detached bool) (*Conn, error) {
	if !b.originAllowed(r) {
		return nil, b.refuseOrigin(w, r)
	}
	chain := stack.Inspect(w)
	if !sseWorks(chain, r, detached) {
		return nil, b.refuseStack(w, r, "SSE", chain)
	}
	c := b.newConn(ctx, user)
	if err := c.refuseRooms(w, r, rooms); err != nil {
		return nil, err
	}
	// The resume cursor: the browser's Last-Event-ID on its own reconnects,
	// the query for a first connection (EventSource cannot set headers).
	var pos uint64
	if id := cmp.Or(r.Header.Get("Last-Event-ID"), r.URL.Query().Get("last_event_id")); id != "" && b.hist != nil {
		var err error
		if pos, err = parsePosition(id); err != nil {
			b.logRefused(r, "cursor", "an event stream with an invalid resume position: "+err.Error())
			w.Header().Set("Roomcast-Error", "invalid_id")
			http.Error(w, err.Error(), http.StatusBadRequest)
			return nil, err
		}
	}
	s := &sseStream{c: c, w: w, rc: http.NewResponseController(w), reqCtx: r.Context(), chain: chain}
	if age := b.cfg.sseMaxAge; age > 0 {
		s.ends = time.Now().Add(age - rand.N(age/10+1))
	}
	h := w.Header()
	// A middleware that announced an encoding before this handler ran (gin's
	// gzip) has committed to compressing: taken over beneath it, the stream
	// would get its trailer written into a hijacked response. Stream
	// through it instead, compressed and flushed event by event.
	hijack := detached && r.ProtoMajor == 1 && chain.CanHijack && h.Get("Content-Encoding") == ""
	if !hijack && !chain.CanFlush {
		return nil, b.refuseStack(w, r, "SSE", chain)
	}
	for k, v := range sseHeaders {
		h[k] = v
	}
	if hijack {
		if taken, err := s.hijack(r, b.cfg.writeTimeout); err != nil {
			if taken { // the client left while the head was written
				return nil, err
			}
			cause, fix := chain.HijackFailed(err)
			return nil, b.refuse(w, r, "SSE", chain, cause, fix)
		}
	}
	if s.conn == nil { // driven: written through the host's writers
		if !chain.Bare() && h.Get("Content-Encoding") == "" {
			// A compressing middleware would hold events back until it has
			// enough bytes to compress; an explicit encoding makes the
			// common ones (gzhttp, NYTimes gziphandler, chi's Compress)
			// pass the stream through untouched. One that already chose
			// an encoding compresses and flushes each event instead.
			h.Set("Content-Encoding", "identity")
		}
		w.WriteHeader(http.StatusOK)
		_ = s.rc.SetWriteDeadline(time.Now().Add(b.cfg.writeTimeout))
		if _, err := fmt.Fprintf(w, "retry: %d\n\n", sseRetryMillis); err != nil {
			return nil, err
		}
		if err := s.rc.Flush(); err != nil {
			return nil, fmt.Errorf("pubsub: flushing an SSE stream through %s: %w", chain, err)
		}
	}
	c.sse = s
	if s.conn != nil {
		c.attach(s) // written by a writer goroutine, like a WebSocket
		c.keepalive = time.AfterFunc(b.cfg.keepAlive, c.keepAlive)
	} else {
		c.attach(nil) // written by the goroutine that drives it: writeLoop
	}
	if err := b.start(c); err != nil {
		if errors.Is(err, ErrClosed) { // shutdown began while the head was written
			_ = s.write(c, wire.Close(CloseServiceRestart, "service restart"))
			if s.conn != nil {
				_ = s.conn.Close()
			}
		}
		return nil, err
	}
	resume := map[*fanout.Topic]string{}
	watch := presenceRooms(r)
	for _, room := range rooms {
		_, history := b.hist.Rule(room)
		t, added, err := c.joinRoom(room, wire.Reply("subscribed", room, "", nil), pos > 0 && history)
		if err == nil && watch[room] {
			err = c.watch(room)
		}
		switch {
		case err == nil, errors.Is(err, ErrClosed):
			if added && pos > 0 && history {
				resume[t] = room
			}
		default:
			b.log.Error("pubsub: subscribe", "room", room, "err", err)
			c.reply(wire.Error("internal", "subscribe failed", room, nil))
		}
	}
	c.startResume(resume, pos, nil)
	return c, nil
}

// writeLoop writes queued frames as SSE events, and a comment line when the
// stream has been idle for the keep-alive interval, until the connection
// closes or the client goes away.
func (s *sseStream) writeLoop(c *Conn) {
	idle := time.NewTimer(c.b.cfg.keepAlive)
	defer idle.Stop()
	reqDone := s.reqCtx.Done()
	var gone <-chan bool // the client left, once reqDone no longer tells
	for {
		batch, closing := c.out.Take()
		if batch != nil {
			err := s.write(c, batch...)
			c.out.Recycle(batch)
			if err != nil {
				c.closeWith(CloseInternalError, "write failed", fmt.Errorf("pubsub: write: %w", err), false)
				return
			}
			s.aged() // then the next Take drains the queue and ends the stream
			idle.Reset(c.b.cfg.keepAlive)
			continue
		}
		if closing {
			// Tell the client why, as a WebSocket close frame would.
			_ = s.write(c, wire.Close(c.closeInfo()))
			return
		}
		select {
		case <-c.out.Wake():
		case <-reqDone:
			if s.reqCtx.Err() == context.DeadlineExceeded {
				// A middleware's request deadline (chi's Timeout), not
				// the client: the stream lives on, and the connection
				// itself says when the client leaves (writes fail too).
				reqDone, gone = nil, s.chain.CloseNotify()
				c.b.noteRequestDeadline(c, gone != nil)
				if gone == nil { // nothing would tell a departure: end it, the client resumes
					c.closeWith(CloseServiceRestart, "request deadline", errRequestDeadline, true)
				}
				continue
			}
			c.closeWith(CloseNormal, "", nil, false)
			return
		case <-gone:
			c.closeWith(CloseNormal, "", nil, false)
			return
		case <-idle.C:
			if s.aged() {
				continue
			}
			if err := s.write(c, keepAliveFrame); err != nil {
				c.closeWith(CloseIdleTimeout, "keep-alive failed", ErrIdleTimeout, false)
				return
			}
			idle.Reset(c.b.cfg.keepAlive)
		}
	}
}

// write sends frames as events in one write and one flush; keepAliveFrame
// is a comment line.
func (s *sseStream) write(c *Conn, frames ...*wire.Frame) error {
	if s.aborted.Load() {
		return ErrClosed
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	buf := (*bp)[:0]
	for _, f := range frames {
		if f == keepAliveFrame {
			buf = append(buf, ":\n\n"...)
			continue
		}
		if f.Stored { // EventSource keeps the last one: it is the resume cursor
			buf = append(buf, "id: "...)
			buf = append(buf, f.ID...)
			buf = append(buf, '\n')
		}
		buf = append(buf, "data: "...)
		buf = append(buf, f.JSON...)
		buf = append(buf, "\n\n"...)
	}
	if cap(buf) <= 2*maxBatchBytes {
		*bp = buf[:0]
	}
	var err error
	if s.conn != nil {
		_, err = s.conn.Write(buf)
	} else {
		_ = s.rc.SetWriteDeadline(time.Now().Add(c.b.cfg.writeTimeout))
		if _, err = s.w.Write(buf); err == nil {
			err = s.rc.Flush()
		}
	}
	if err == nil && (len(frames) > 1 || frames[0] != keepAliveFrame) {
		c.b.stats.Wrote(len(buf), len(frames), born(frames))
	}
	return err
}

// abort makes a write in progress fail now.
func (s *sseStream) abort() {
	s.aborted.Store(true)
	if s.conn != nil {
		_ = s.conn.Close()
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		_ = s.rc.SetWriteDeadline(time.Now())
	}
}

// hijack takes the connection over and writes the response head, with the
// headers the host's middleware set (cookies, CORS) and "Connection: close",
// which delimits the body without chunked encoding.
// It reports whether the connection was taken (then an error is the
// client's: it left during the head).
func (s *sseStream) hijack(r *http.Request, timeout time.Duration) (taken bool, err error) {
	h := s.w.Header().Clone()
	conn, _, err := hijack(s.w)
	if err != nil {
		return false, err
	}
	h.Set("Connection", "close")
	head := stack.Head(fmt.Sprintf("HTTP/%d.%d", r.ProtoMajor, r.ProtoMinor), http.StatusOK, h)
	head = fmt.Appendf(head, "retry: %d\n\n", sseRetryMillis)
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(head); err != nil {
		conn.Close()
		return true, err
	}
	_ = conn.SetWriteDeadline(time.Time{})
	// Nothing of the request or the host's writers is used any more: an
	// idle stream keeps only its connection.
	s.conn, s.w, s.rc, s.reqCtx, s.chain = conn, nil, nil, nil, stack.Chain{}
	return true, nil
}

// WriteBatch writes a batch to a hijacked stream: one write call.
func (s *sseStream) WriteBatch(batch []*wire.Frame) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.c.b.cfg.writeTimeout))
	s.lastWrite.Store(time.Now().UnixNano())
	return s.write(s.c, batch...)
}

// WriteEnd ends a hijacked stream: the close event says why, as a
// WebSocket close frame would, then the connection closes, which ends the
// body.
func (s *sseStream) WriteEnd() {
	_ = s.WriteBatch([]*wire.Frame{wire.Close(s.c.closeInfo())})
	_ = s.conn.Close()
}

// WriteFailed closes a stream whose write failed.
func (s *sseStream) WriteFailed(err error) {
	s.c.closeWith(CloseInternalError, "write failed", fmt.Errorf("pubsub: write: %w", err), false)
	s.abort()
}

// aged ends the stream if it has reached its maximum age, after what is
// queued: the client reconnects, resuming from its last id. A stream is
// checked when it writes and at each keep-alive, so it ends at most one
// keep-alive interval late.
func (s *sseStream) aged() bool {
	if s.ends.IsZero() || time.Now().Before(s.ends) {
		return false
	}
	s.c.closeWith(CloseServiceRestart, "stream age", ErrStreamMaxAge, true)
	return true
}

// keepAliveFrame is an SSE comment line, written on an idle stream.
var keepAliveFrame = &wire.Frame{}

// keepAlive checks that the client of a hijacked stream is still there (it
// never sends anything, so a read that ends means it left) and queues a
// comment that keeps proxies from timing the stream out. It reports whether
// the connection is still open.
func (s *sseStream) keepAlive(c *Conn) bool {
	var buf [64]byte
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := s.conn.Read(buf[:])
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		c.closeWith(CloseNormal, "", nil, false) // the client went away
		return false
	}
	if s.aged() {
		return false
	}
	// A comment only after a whole interval of silence.
	if time.Since(time.Unix(0, s.lastWrite.Load())) < c.b.cfg.keepAlive-c.b.cfg.keepAlive/8 {
		return true
	}
	if !c.out.Enqueue(keepAliveFrame) {
		c.closeSlow()
		return false
	}
	return true
}

// refuseRooms answers 400 or 403 for the first room of rooms the connection
// may not subscribe to, naming it in the headers Roomcast-Error (the error
// code) and Roomcast-Room (URL-escaped): a client that only sees its
// EventSource fail can ask with HEAD and learn which room to drop.
func (c *Conn) refuseRooms(w http.ResponseWriter, r *http.Request, rooms []string) error {
	for _, room := range rooms {
		status, code, msg := 0, "", ""
		err := subject.ValidRoom(room)
		if err != nil {
			status, code, msg = http.StatusBadRequest, "invalid_room", fmt.Sprintf("invalid room name %q: %v", truncate(room), err)
			err = fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
		} else if err = c.authorize(c.b.cfg.authSubscribe, "subscribe", room); err != nil {
			status, code, msg = http.StatusForbidden, "forbidden", fmt.Sprintf("not allowed to subscribe to %q", room)
		}
		if err != nil {
			c.b.logRefused(r, "room", "an event stream for a room it may not have ("+code+"): "+msg)
			w.Header().Set("Roomcast-Error", code)
			w.Header().Set("Roomcast-Room", url.QueryEscape(truncate(room)))
			http.Error(w, msg, status)
			return err
		}
	}
	return nil
}
