package pubsub

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/history"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// WebSocket close codes the broker sends. SSE streams end with a "close"
// event carrying the same code. See PROTOCOL.md.
const (
	CloseNormal         = 1000 // the connection ended normally
	CloseInvalidData    = 1007 // a client text frame was not valid UTF-8
	CloseMessageTooBig  = 1009 // a client frame exceeded the maximum message size
	CloseInternalError  = 1011 // the server failed; reconnect later
	CloseServiceRestart = 1012 // the server is shutting down; reconnect
	CloseTryAgainLater  = 1013 // a resume met a store that stayed unavailable; reconnect with backoff and resume
	CloseIdleTimeout    = 4000 // the client did not answer a ping in time
	CloseSlowConsumer   = 4001 // the client fell too far behind; reconnect
	CloseDisconnected   = 4003 // the server ended the connection (DisconnectUser, DisconnectConn); do not reconnect
	CloseReconnectLater = 4004 // the server ended the connection and the client may come back later, with a long backoff
	CloseSessionExpired = 4005 // the session's expiry passed without a refresh (ContextWithExpiry); reconnect only if the host accepts the client
)

// Conn is one client connection, over WebSocket or SSE. Server code gets one
// from Broker.Accept; connections served by Broker.Handler are managed by the
// broker. Conn's methods are safe for concurrent use.
//
// A Conn is its identity and its lifecycle; what it sends waits in its
// queue (fanout.Queue), the rooms it resumes in its gate (history.Gate),
// and its transport is a WebSocket (handler.go) or an event stream
// (sse.go).
type Conn struct {
	// First, and inline: every delivery goes through the gate into the
	// queue, and one object per connection keeps the fan-out in cache.
	gate history.Gate
	out  fanout.Queue

	b         *Broker
	id        string
	user      string
	ctx       context.Context
	cancel    context.CancelFunc
	ws        *wsConn      // nil for SSE
	sse       *sseStream   // nil for WebSocket
	keepalive *time.Timer  // of a WebSocket or a hijacked SSE stream
	lease     *lease       // the session's expiry; nil without one
	calls     callState    // calls being answered (call.go)
	inbox     *inboxReader // its user's inbox (inbox.go); nil without one
	posted    atomic.Bool  // a POSTed frame is being handled (post.go): one at a time
	since     time.Time

	mu          sync.Mutex // the lifecycle and the rooms
	closing     bool
	closeCode   int
	closeReason string
	err         error
	served      bool
	rooms       map[string]*fanout.Topic
	userTopic   *fanout.Topic

	bg         sync.WaitGroup // keep-alive and resume goroutines
	done       chan struct{}
	finishOnce sync.Once
}

func (b *Broker) newConn(ctx context.Context, user string) *Conn {
	ctx, cancel := context.WithCancel(ctx)
	c := &Conn{
		b:      b,
		id:     subject.ConnID(b.instance, fmt.Sprintf("%x", b.connSeq.Add(1))),
		user:   user,
		ctx:    ctx,
		cancel: cancel,
		rooms:  make(map[string]*fanout.Topic),
		done:   make(chan struct{}),
		since:  time.Now(),
	}
	if ends := ExpiryFromContext(ctx); !ends.IsZero() {
		c.lease = &lease{c: c, ends: ends}
	}
	c.calls.init(ctx)
	if b.inbox != nil && user != "" {
		c.inbox = &inboxReader{c: c}
	}
	return c
}

// attach gives the connection its queue, written through sink (nil: by
// the goroutine that drives it).
func (c *Conn) attach(sink fanout.Sink) {
	c.out.Init(c.b.cfg.queueMessages, c.b.cfg.queueBytes, sink, c.b.stats, c.b.fan.Writers())
	c.gate.Init(&c.out)
}

// ID returns the connection's id, unique across instances; pass it to
// Broker.SendToConn.
func (c *Conn) ID() string { return c.id }

// User returns the user the host's middleware named (see ContextWithUser),
// or "".
func (c *Conn) User() string { return c.user }

// Context returns the upgrade request's context, values included, which
// stays valid for the connection's lifetime and is cancelled when it ends.
func (c *Conn) Context() context.Context { return c.ctx }

// Transport returns "websocket" or "sse".
func (c *Conn) Transport() string {
	if c.ws != nil {
		return "websocket"
	}
	return "sse"
}

// Err reports why the connection ended: nil while it is open or when it
// ended normally; ErrSlowConsumer, ErrIdleTimeout, ErrClosed (server
// shutdown), ErrDisconnected (DisconnectUser, DisconnectConn),
// ErrSessionExpired, ErrStreamMaxAge or a transport error otherwise.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Rooms returns the rooms the connection is in, in no particular order.
func (c *Conn) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	rooms := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		rooms = append(rooms, r)
	}
	return rooms
}

// Join puts the connection in room, as if the client had subscribed, but
// without the subscribe hook: server code decides. The client is told with
// a "subscribed" frame. Joining a room twice is not an error.
func (c *Conn) Join(room string) error {
	if err := subject.ValidRoom(room); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	_, _, err := c.joinRoom(room, wire.Reply("subscribed", room, "", nil), false)
	return err
}

// Leave takes the connection out of room and tells the client with an
// "unsubscribed" frame. Leaving a room it is not in is not an error.
func (c *Conn) Leave(room string) error {
	c.leaveRoom(room, wire.Reply("unsubscribed", room, "", nil), true)
	return nil
}

// Send queues data, one JSON value, for this connection only; it is
// delivered as a "direct" frame with "to":"conn". Send does not wait for the
// write. It fails with ErrClosed once the connection is closing, and a
// connection whose queue is full is closed as a slow consumer.
func (c *Conn) Send(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	data, err := c.b.checkData(data)
	if err != nil {
		return err
	}
	return c.send(data)
}

// send queues data, valid compact JSON of any size, as Send does.
func (c *Conn) send(data []byte) error {
	f := wire.MessageFrame(wire.KindConn, "", wire.Envelope{ID: c.b.nextMessageID(), Data: data})
	if c.out.Closing() {
		return ErrClosed
	}
	if !c.out.Enqueue(f) {
		c.closeSlow()
		return ErrSlowConsumer
	}
	return nil
}

// Close ends the connection normally (code 1000) after writing what is
// already queued.
func (c *Conn) Close() error {
	c.closeWith(CloseNormal, "", nil, true)
	return nil
}

// Messages returns the messages the client sends with "send" frames, in
// order, and drives the connection: the handler that called Accept must
// range over Messages (or call Wait) until it ends, which is when the
// connection closes. Breaking out of the loop closes the connection. An SSE
// client cannot send, so for SSE the loop only waits. Messages can be
// ranged over once.
func (c *Conn) Messages() iter.Seq[[]byte] {
	return func(yield func([]byte) bool) { c.serve(yield) }
}

// Wait drives the connection until it ends and returns Err. Use it instead
// of Messages when the handler takes no messages from the client; "send"
// frames are then refused with "unsupported".
func (c *Conn) Wait() error {
	c.serve(nil)
	return c.Err()
}

func (c *Conn) serve(yield func([]byte) bool) {
	c.mu.Lock()
	served := c.served
	c.served = true
	c.mu.Unlock()
	if served {
		<-c.done
		return
	}
	defer c.finish()
	if c.ws != nil {
		c.ws.readLoop(c, yield)
	} else {
		c.sse.writeLoop(c)
	}
}

// finish releases everything once the connection's driving loop returns,
// once, whoever calls it.
func (c *Conn) finish() {
	c.finishOnce.Do(func() {
		c.closeWith(CloseNormal, "", nil, false)
		c.bg.Wait()
		c.out.Wait()
		c.cancel()
		if c.sse != nil {
			c.sse.finished()
		}
		close(c.done)
		c.b.connsWG.Done()
	})
}

func (c *Conn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// finishUndriven finishes a connection that nothing drives: accepted by a
// host handler that returned without Messages or Wait. Reports whether it
// was one.
func (c *Conn) finishUndriven() bool {
	c.mu.Lock()
	undriven := !c.served && !(c.sse != nil && c.sse.conn != nil)
	c.served = true
	c.mu.Unlock()
	if undriven {
		go c.finish()
	}
	return undriven
}

func (c *Conn) closeInfo() (code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.closeReason
}

// closeWith starts closing the connection, once: it leaves every topic so
// nothing more is queued, and has the writer send code and reason after
// the queued frames (drain) or at once. err becomes Conn.Err.
func (c *Conn) closeWith(code int, reason string, err error, drain bool) (closed bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	c.closeCode, c.closeReason, c.err = code, reason, err
	rooms, ut := c.rooms, c.userTopic
	c.rooms, c.userTopic = nil, nil
	// Under c.mu: a finish that finds the connection closing must find its
	// queue closed, with the writer that ends it counted.
	c.out.Close(drain)
	c.mu.Unlock()

	if c.sse != nil && c.sse.conn != nil {
		go c.finish() // no handler goroutine drives a hijacked SSE stream
	}
	if c.keepalive != nil {
		c.keepalive.Stop()
	}
	c.lease.stop()
	c.calls.end() // their handlers' contexts: the connection waits for them
	c.closeInbox()
	for room, t := range rooms {
		c.b.pres.Left(room, c.user)
		c.removeFrom(t)
	}
	c.b.pres.UnwatchAll(watcher{c})
	if ut != nil {
		c.removeFrom(ut)
	}
	c.b.unregister(c)
	return true
}

func (c *Conn) closeSlow() {
	rooms := c.Rooms()
	queued, _ := c.out.Len()
	if !c.closeWith(CloseSlowConsumer, "slow consumer", ErrSlowConsumer, false) {
		return // closed already, for this or another reason
	}
	c.b.stats.SlowConsumer()
	if ok, suppressed := c.b.logNoisy.Allow("slow-consumer"); ok {
		slices.Sort(rooms)
		if len(rooms) > 10 {
			rooms = append(rooms[:10], fmt.Sprintf("and %d more", len(rooms)-10))
		}
		limit, _ := c.out.Bounds()
		c.b.log.Warn("pubsub: closed a slow consumer (4001): its send queue overflowed; it reconnects and resumes where rooms keep history",
			"conn", c.id, "user", c.user, "transport", c.Transport(), "rooms", rooms, "queued", queued, "queue_limit", limit,
			"suppressed", suppressed)
	}
}

// abort closes the transport at once, unblocking any write in progress.
func (c *Conn) abort() {
	c.closeWith(CloseServiceRestart, "service restart", ErrClosed, false)
	c.abortTransport()
}

func (c *Conn) abortTransport() {
	if c.ws != nil {
		// Not ws.CloseNow: it waits for a close handshake in progress.
		_ = c.ws.netConn.Close()
	} else {
		c.sse.abort()
	}
}

// busy counts a goroutine of the connection that finish must wait for,
// unless the connection is closing; the goroutine calls c.bg.Done.
func (c *Conn) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.bg.Add(1)
	return true
}

// reply queues a control frame for the client.
func (c *Conn) reply(f *wire.Frame) {
	if !c.out.Enqueue(f) {
		c.closeSlow()
	}
}
