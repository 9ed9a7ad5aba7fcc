package pubsub

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// WebSocket close codes the broker sends. SSE streams end with a "close"
// event carrying the same code. See PROTOCOL.md.
const (
	CloseNormal         = 1000 // the connection ended normally
	CloseMessageTooBig  = 1009 // a client frame exceeded the maximum message size
	CloseInternalError  = 1011 // the server failed; reconnect later
	CloseServiceRestart = 1012 // the server is shutting down; reconnect
	CloseIdleTimeout    = 4000 // the client did not answer a ping in time
	CloseSlowConsumer   = 4001 // the client fell too far behind; reconnect
)

// ErrIdleTimeout is the reason (Conn.Err) of a connection that did not answer
// a keep-alive ping in time.
var ErrIdleTimeout = errors.New("pubsub: keep-alive timeout")

// Conn is one client connection, over WebSocket or SSE. Server code gets one
// from Broker.Accept; connections served by Broker.Handler are managed by the
// broker. Conn's methods are safe for concurrent use.
type Conn struct {
	b       *Broker
	id      string
	user    string
	ctx     context.Context
	cancel  context.CancelFunc
	ws      *websocket.Conn // nil for SSE
	netConn net.Conn        // the WebSocket's socket, for write deadlines
	fw      *frameWriter    // under the WebSocket's write buffer
	sse     *sseStream      // nil for WebSocket
	ping    *time.Timer     // keep-alive of a WebSocket or a hijacked SSE stream

	mu          sync.Mutex
	rooms       map[string]*topic
	userTopic   *topic
	queue       []*wire.Frame
	spare       []*wire.Frame // reused queue backing array
	queueBytes  int
	writing     bool // a WebSocket writer goroutine is running
	closing     bool
	closeCode   int
	closeReason string
	err         error
	served      bool
	replaying   map[*topic]*replayBuf // rooms being resumed: live frames wait here
	watching    map[string]*roomView  // rooms whose presence events the client asked for
	drained     chan struct{}         // signalled when the writer takes a batch, for paced replays

	bg         sync.WaitGroup // writer and keep-alive goroutines
	done       chan struct{}
	finishOnce sync.Once
}

func (b *Broker) newConn(ctx context.Context, user string) *Conn {
	ctx, cancel := context.WithCancel(ctx)
	return &Conn{
		b:      b,
		id:     subject.ConnID(b.instance, fmt.Sprintf("%x", b.connSeq.Add(1))),
		user:   user,
		ctx:    ctx,
		cancel: cancel,
		rooms:  make(map[string]*topic),
		done:   make(chan struct{}),
	}
}

// ID returns the connection's id, unique across instances; pass it to
// Broker.SendToConn.
func (c *Conn) ID() string { return c.id }

// User returns the user the host's middleware named (see ContextWithUser), or "".
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
// shutdown) or a transport error otherwise.
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
	return c.join(room, wire.Reply("subscribed", room, "", nil))
}

// Leave takes the connection out of room and tells the client with an
// "unsubscribed" frame. Leaving a room it is not in is not an error.
func (c *Conn) Leave(room string) error {
	return c.leave(room, wire.Reply("unsubscribed", room, "", nil))
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
	f := wire.MessageFrame(wire.KindConn, "", wire.Envelope{ID: c.b.nextMessageID(), Data: data})
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return ErrClosed
	}
	if !c.enqueue(f) {
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
		c.readLoop(yield)
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

// enqueue queues f for writing. It reports false when the queue is full;
// the caller must then closeSlow the connection (outside of any topic lock).
// Frames for a closing connection are dropped.
func (c *Conn) enqueue(f *wire.Frame) bool {
	c.mu.Lock()
	ok, start := c.enqueueLocked(f)
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	return ok
}

func (c *Conn) enqueueLocked(f *wire.Frame) (ok, startWriter bool) {
	if c.closing {
		return true, false
	}
	if len(c.queue) >= c.b.cfg.queueMessages || c.queueBytes+len(f.JSON) > c.b.cfg.queueBytes {
		return false, false
	}
	c.queue = append(c.queue, f)
	c.queueBytes += len(f.JSON)
	return true, c.kickLocked()
}

// kickLocked makes the connection's writer look at the queue: for SSE it
// wakes the stream's loop, for WebSocket it reports whether the caller must
// start a writer goroutine (there is at most one, and none while idle).
func (c *Conn) kickLocked() (startWriter bool) {
	if c.sse != nil && c.sse.conn == nil {
		select {
		case c.sse.wake <- struct{}{}:
		default:
		}
		return false
	}
	if c.writing {
		return false
	}
	c.writing = true
	c.bg.Add(1)
	return true
}

// takeQueue hands the queued frames to the writer. When the queue is empty
// it returns nil, and whether the connection is closing.
func (c *Conn) takeQueue() (batch []*wire.Frame, closing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return nil, c.closing
	}
	batch = c.queue
	c.queue, c.spare = c.spare, nil
	c.queueBytes = 0
	if c.drained != nil {
		select {
		case c.drained <- struct{}{}:
		default:
		}
	}
	return batch, false
}

// returnBatch keeps a small drained batch's array for the next one; a large
// one is left to the garbage collector so idle connections stay small.
func (c *Conn) returnBatch(batch []*wire.Frame) {
	if cap(batch) > 64 {
		return
	}
	clear(batch)
	c.mu.Lock()
	if c.spare == nil {
		c.spare = batch[:0]
	}
	c.mu.Unlock()
}

func (c *Conn) closeInfo() (code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.closeReason
}

// writeLoop is the writer of a WebSocket or a hijacked SSE stream: it
// drains the queue, joining queued frames into one write, and exits when the
// queue is empty. On a closing connection it writes the close frame last and
// stays marked as running, so no other writer starts.
func (c *Conn) writeLoop() {
	defer c.bg.Done()
	for {
		batch, closing := c.takeQueue()
		if batch == nil {
			if closing {
				c.writeClose()
				return
			}
			c.mu.Lock()
			if len(c.queue) > 0 || c.closing { // raced with enqueue or close
				c.mu.Unlock()
				continue
			}
			c.writing = false
			c.mu.Unlock()
			return
		}
		var err error
		if c.ws != nil {
			err = c.writeWS(batch)
		} else {
			err = c.sse.writeConn(c, batch)
		}
		c.returnBatch(batch)
		if err != nil {
			c.closeWith(CloseInternalError, "write failed", fmt.Errorf("pubsub: write: %w", err), false)
			c.abortTransport()
		}
	}
}

// writeClose ends the transport with the close code.
func (c *Conn) writeClose() {
	code, reason := c.closeInfo()
	if c.ws == nil {
		_ = c.sse.writeConn(c, []*wire.Frame{wire.Close(code, reason)})
		_ = c.sse.conn.Close()
		return
	}
	// A peer that does not answer the close frame (dead, or not reading) is
	// cut off at the socket, which also ends the reader, if any.
	force := time.AfterFunc(closeHandshakeTimeout, func() { _ = c.netConn.Close() })
	_ = c.ws.Close(websocket.StatusCode(code), reason)
	force.Stop()
}

// closeHandshakeTimeout bounds how long a closing WebSocket waits for the
// peer's close frame.
const closeHandshakeTimeout = 2 * time.Second

// maxBatchBytes caps a joined WebSocket message. Joining saves a syscall and
// a frame header per message; the cap keeps one write short.
const maxBatchBytes = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatchBytes); return &b }}

func (c *Conn) writeWS(batch []*wire.Frame) error {
	// The deadline is on the socket, and cleared after, so that the
	// library's own control frames (pongs, close) never meet a stale one.
	ctx := context.Background()
	_ = c.netConn.SetWriteDeadline(time.Now().Add(c.b.cfg.writeTimeout))
	defer c.netConn.SetWriteDeadline(time.Time{})
	c.fw.hold()
	err := c.writeFrames(ctx, batch)
	if ferr := c.fw.release(); err == nil {
		err = ferr
	}
	return err
}

func (c *Conn) writeFrames(ctx context.Context, batch []*wire.Frame) error {
	if len(batch) == 1 {
		return c.ws.Write(ctx, websocket.MessageText, batch[0].JSON)
	}
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	buf := (*bp)[:0]
	for _, f := range batch {
		if len(buf) > 0 && len(buf)+1+len(f.JSON) > maxBatchBytes {
			if err := c.ws.Write(ctx, websocket.MessageText, buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if len(buf) > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, f.JSON...)
	}
	err := c.ws.Write(ctx, websocket.MessageText, buf)
	if cap(buf) <= 2*maxBatchBytes { // an oversized single frame grew it: drop it
		*bp = buf[:0]
	}
	return err
}

// closeWith starts closing the connection, once: it leaves every topic so
// nothing more is queued, and has the writer send code and reason after
// the queued frames (drain) or at once. err becomes Conn.Err.
func (c *Conn) closeWith(code int, reason string, err error, drain bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.closeCode, c.closeReason, c.err = code, reason, err
	if c.drained != nil { // a paced replay waits there: let it see the close
		select {
		case c.drained <- struct{}{}:
		default:
		}
	}
	if !drain {
		clear(c.queue)
		c.queue, c.queueBytes = c.queue[:0], 0
	}
	start := c.kickLocked()
	rooms, ut, watching := c.rooms, c.userTopic, c.watching
	c.rooms, c.userTopic, c.watching = nil, nil, nil
	c.mu.Unlock()

	if start {
		go c.writeLoop()
	}
	if c.sse != nil && c.sse.conn != nil {
		go c.finish() // no handler goroutine drives a hijacked SSE stream
	}
	if c.ping != nil {
		c.ping.Stop()
	}
	for room, t := range rooms {
		c.b.pres.left(room, c.user)
		c.b.removeMember(t, c)
	}
	if len(watching) > 0 {
		views := make([]*roomView, 0, len(watching))
		for _, r := range watching {
			views = append(views, r)
		}
		c.b.pres.unwatch(c, views)
	}
	if ut != nil {
		c.b.removeMember(ut, c)
	}
	c.b.unregister(c)
}

func (c *Conn) closeSlow() {
	c.b.log.Info("pubsub: closing slow consumer", "conn", c.id, "user", c.user)
	c.closeWith(CloseSlowConsumer, "slow consumer", ErrSlowConsumer, false)
}

// abort closes the transport at once, unblocking any write in progress.
func (c *Conn) abort() {
	c.closeWith(CloseServiceRestart, "service restart", ErrClosed, false)
	c.abortTransport()
}

func (c *Conn) abortTransport() {
	if c.ws != nil {
		// Not ws.CloseNow: it waits for a close handshake in progress.
		_ = c.netConn.Close()
	} else {
		c.sse.abort()
	}
}

// reply queues a control frame for the client.
func (c *Conn) reply(f *wire.Frame) {
	if !c.enqueue(f) {
		c.closeSlow()
	}
}

// join adds the connection to room's topic and queues ack in the same
// critical section, so the client sees the ack before any message of the
// room.
func (c *Conn) join(room string, ack *wire.Frame) error {
	_, _, err := c.joinTopic(room, ack, false)
	return err
}

// joinTopic is join; with replay, the room starts in replay mode (see
// resume.go) and the caller must start the resume when added is true.
func (c *Conn) joinTopic(room string, ack *wire.Frame, replay bool) (t *topic, added bool, err error) {
	c.mu.Lock()
	_, member := c.rooms[room]
	full := len(c.rooms) >= c.b.cfg.maxRooms
	closing := c.closing
	c.mu.Unlock()
	switch {
	case closing:
		return nil, false, ErrClosed
	case member:
		c.reply(ack)
		return nil, false, nil
	case full:
		return nil, false, ErrTooManyRooms
	}
	t, err = c.b.acquire(wire.KindRoom, room, c.b.roomSubject(room))
	if err != nil {
		return nil, false, err
	}
	added, err = c.addMember(t, func() error {
		if _, ok := c.rooms[room]; ok {
			return nil // joined concurrently
		}
		if len(c.rooms) >= c.b.cfg.maxRooms {
			return ErrTooManyRooms
		}
		c.rooms[room] = t
		// Under c.mu, as leaving is: a join is always recorded before the
		// leave that follows it.
		c.b.pres.joined(room, c.user)
		if replay {
			if c.replaying == nil {
				c.replaying = make(map[*topic]*replayBuf)
			}
			c.replaying[t] = &replayBuf{}
		}
		return nil
	}, ack)
	if !added {
		c.b.release(t)
	}
	return t, added, err
}

// addMember makes c a member of t if register (run under c.mu) allows it
// and queues ack. Lock order is topic, then connection, as in dispatch; and
// since closeWith marks the connection closing under c.mu before it
// collects topics to leave, a member is never added to a closing connection.
func (c *Conn) addMember(t *topic, register func() error, ack *wire.Frame) (added bool, err error) {
	t.mu.Lock()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		t.mu.Unlock()
		return false, ErrClosed
	}
	_, already := t.members[c]
	if err = register(); err == nil && !already {
		t.members[c] = struct{}{}
		added = true
	}
	ok, start := true, false
	if err == nil && ack != nil {
		ok, start = c.enqueueLocked(ack)
	}
	c.mu.Unlock()
	t.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	if !ok {
		c.closeSlow()
	}
	return added, err
}

func (c *Conn) leave(room string, ack *wire.Frame) error {
	c.mu.Lock()
	t := c.rooms[room]
	delete(c.rooms, room)
	delete(c.replaying, t)
	view := c.watching[room]
	delete(c.watching, room)
	c.mu.Unlock()
	if t != nil {
		c.b.pres.left(room, c.user)
		c.b.removeMember(t, c)
	}
	if view != nil {
		c.b.pres.unwatch(c, []*roomView{view})
	}
	if ack != nil {
		c.reply(ack)
	}
	return nil
}

// joinUser subscribes the connection to its user's messages.
func (c *Conn) joinUser() error {
	t, err := c.b.acquire(wire.KindUser, c.user, c.b.subjects.User(c.user))
	if err != nil {
		return err
	}
	added, err := c.addMember(t, func() error { c.userTopic = t; return nil }, nil)
	if !added {
		c.b.release(t)
	}
	return err
}

func (b *Broker) removeMember(t *topic, c *Conn) {
	t.mu.Lock()
	delete(t.members, c)
	t.mu.Unlock()
	b.release(t)
}
