package pubsub

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// sseRetryMillis is the reconnection delay an EventSource is told to use.
const sseRetryMillis = 2000

// sseStream is the SSE side of a Conn. The handler goroutine is its writer:
// an SSE response must be written by the handler that owns it.
type sseStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	reqDone <-chan struct{}
	wake    chan struct{}
	aborted atomic.Bool
}

func (b *Broker) acceptSSE(w http.ResponseWriter, r *http.Request, ctx context.Context, user string, rooms []string) (*Conn, error) {
	if !b.originAllowed(r) {
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return nil, fmt.Errorf("%w: origin %q", ErrForbidden, truncate(r.Header.Get("Origin")))
	}
	c := b.newConn(ctx, user)
	for _, room := range rooms {
		if err := subject.ValidRoom(room); err != nil {
			http.Error(w, fmt.Sprintf("invalid room name %q: %v", truncate(room), err), http.StatusBadRequest)
			return nil, fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
		}
		if err := c.authorize(b.cfg.authSubscribe, "subscribe", room); err != nil {
			http.Error(w, fmt.Sprintf("not allowed to subscribe to %q", room), http.StatusForbidden)
			return nil, err
		}
	}
	s := &sseStream{w: w, rc: http.NewResponseController(w), reqDone: r.Context().Done(), wake: make(chan struct{}, 1)}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx must not buffer the stream
	w.WriteHeader(http.StatusOK)
	_ = s.rc.SetWriteDeadline(time.Now().Add(b.cfg.writeTimeout))
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", sseRetryMillis); err != nil {
		return nil, err
	}
	if err := s.rc.Flush(); err != nil {
		return nil, fmt.Errorf("pubsub: SSE needs a flushable ResponseWriter: %w", err)
	}
	c.sse = s
	if err := b.start(c); err != nil {
		return nil, err
	}
	for _, room := range rooms {
		_ = c.join(room, wire.Reply("subscribed", room, "", nil))
	}
	return c, nil
}

// writeLoop writes queued frames as SSE events, and a comment line when the
// stream has been idle for the keep-alive interval, until the connection
// closes or the client goes away.
func (s *sseStream) writeLoop(c *Conn) {
	idle := time.NewTimer(c.b.cfg.keepAlive)
	defer idle.Stop()
	for {
		batch, closing := c.takeQueue()
		if batch != nil {
			err := s.write(c, batch...)
			c.returnBatch(batch)
			if err != nil {
				c.closeWith(CloseInternalError, "write failed", fmt.Errorf("pubsub: write: %w", err), false)
				return
			}
			idle.Reset(c.b.cfg.keepAlive)
			continue
		}
		if closing {
			// Tell the client why, as a WebSocket close frame would.
			_ = s.write(c, wire.Close(c.closeInfo()))
			return
		}
		select {
		case <-s.wake:
		case <-s.reqDone:
			c.closeWith(CloseNormal, "", nil, false)
			return
		case <-idle.C:
			if err := s.write(c); err != nil {
				c.closeWith(CloseIdleTimeout, "keep-alive failed", ErrIdleTimeout, false)
				return
			}
			idle.Reset(c.b.cfg.keepAlive)
		}
	}
}

// write sends frames as events in one write and one flush; with no frames it
// sends a keep-alive comment.
func (s *sseStream) write(c *Conn, frames ...*wire.Frame) error {
	if s.aborted.Load() {
		return ErrClosed
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	buf := (*bp)[:0]
	if len(frames) == 0 {
		buf = append(buf, ":\n\n"...)
	}
	for _, f := range frames {
		if f.ID != "" {
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
	_ = s.rc.SetWriteDeadline(time.Now().Add(c.b.cfg.writeTimeout))
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

// abort makes a write in progress fail now.
func (s *sseStream) abort() {
	s.aborted.Store(true)
	_ = s.rc.SetWriteDeadline(time.Now())
}
