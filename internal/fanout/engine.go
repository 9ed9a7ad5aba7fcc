// Package fanout is the engine between NATS and the local connections of
// one instance: where a message goes after it is published.
//
//	NATS subject ─▶ one subscription per topic (a room, a user) per process,
//	               refcounted, all delivering into one inbox channel
//	             ─▶ one dispatcher goroutine: takes every message waiting,
//	               decodes each envelope once, builds each client frame once
//	             ─▶ Topic.fanout: a run of a topic's consecutive messages,
//	               Member.Deliver of each on every local member (an
//	               enqueue: tens of nanoseconds, never a write)
//	             ─▶ each connection's Queue, written by the engine's pool of
//	               Writers: one batched write per queue and run
//
// One dispatcher keeps the order NATS delivered in, across all subjects,
// so a connection sees the messages of its rooms and of its user in one
// order. A member whose queue is full is closed (Member.Overflowed) after
// the fan-out, outside every lock: a slow client never slows a room.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/stats"
	"github.com/roomcast/pubsub/internal/wire"
)

// Member is a local connection as the engine sees it.
type Member interface {
	// Deliver queues f, fanned out from t, reporting false when the
	// member's queue is full. It must not block.
	Deliver(t *Topic, f *wire.Frame) bool
	// Overflowed closes the member as a slow consumer. It is called outside
	// the engine's locks, after the fan-out that overflowed it.
	Overflowed()
}

// Topic is one NATS subscription shared by every local member of a room, or
// by every local connection of a user.
type Topic struct {
	Subject string
	Kind    int    // wire.KindRoom or wire.KindUser
	Name    string // room name or user id

	sub   *nats.Subscription
	refs  int           // guarded by Engine.mu
	ready chan struct{} // closed once the server has the subscription
	err   error         // set before ready is closed

	// Of a room with history (dispatcher only): the last store position
	// delivered, and positions a repair delivered ahead of their live copy.
	lastSeq  uint64
	repaired map[uint64]struct{}

	mu      sync.RWMutex
	members map[Member]struct{}
}

// Join runs admit, the member's own critical section (recording the room),
// with t locked against fan-out and membership changes, and makes m a
// member when admit reports add. The order of locks is the topic's, then
// the member's own, as in fan-out.
func (t *Topic) Join(m Member, admit func(member bool) (add bool)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, member := t.members[m]
	if admit(member) {
		t.members[m] = struct{}{}
	}
}

// Leave runs commit with t locked, and removes m when it reports true: a
// leave and a join of the same member never interleave.
func (t *Topic) Leave(m Member, commit func() bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if commit() {
		delete(t.members, m)
	}
}

// Members returns the number of local members.
func (t *Topic) Members() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.members)
}

// fanout delivers frames, in order, to every member of t, then closes the
// members whose queue was full. slow is scratch space, returned for reuse.
func (t *Topic) fanout(frames []*wire.Frame, slow []Member, s *stats.Set) []Member {
	t.mu.RLock()
	n := 0
	for m := range t.members {
		for _, f := range frames {
			if !m.Deliver(t, f) {
				slow = append(slow, m)
				break
			}
			n++
		}
	}
	s.Delivered(n)
	t.mu.RUnlock()
	for i, m := range slow {
		m.Overflowed() // outside the topic lock: closing leaves topics
		slow[i] = nil
	}
	return slow[:0]
}

// Store reads a room's stored messages: the engine fills gaps in a room's
// live messages from it (see repair.go). Nil without history.
type Store interface {
	// ReadRoom calls fn with the room's stored messages after position
	// after, in order, until fn returns false.
	ReadRoom(ctx context.Context, room string, after uint64, fn func(seq uint64, env wire.Envelope) bool) error
}

// Config is the engine's setup.
type Config struct {
	NC  *nats.Conn
	Log *slog.Logger
	// DirectSubject receives every message addressed to one connection of
	// this instance ("<ns>.conn.<instance>.*"); Direct is called with the
	// subject's last token and the frame.
	DirectSubject string
	Direct        func(token string, f *wire.Frame)
	// SubscribeTimeout bounds the wait for the server to have a new
	// subscription.
	SubscribeTimeout time.Duration
	Store            Store
	Stats            *stats.Set // nil: nothing counted
}

// Engine owns the topics of one broker and their dispatcher.
type Engine struct {
	cfg    Config
	inbox  chan *nats.Msg
	direct *nats.Subscription
	prefix int // length of DirectSubject without its "*"

	mu      sync.RWMutex
	closing bool
	topics  map[string]*Topic // by subject

	writers *Writers

	taken       atomic.Bool // the dispatcher holds messages it took from the inbox and has not fanned out yet
	dispatching atomic.Bool // the dispatcher runs: a backlog in its inbox will be taken
	behind      atomic.Bool // the dispatcher has a backlog: the writer pool is shrunk
	admit       admission   // publishers waiting for the dispatcher to catch up

	stop    chan struct{}
	done    chan struct{}
	started bool
	stopped sync.Once
}

// The dispatcher is behind from when backlogHigh messages still wait after
// it took a batch (a full batch's worth) until fewer than backlogLow do:
// the writer pool is shrunk meanwhile (see Writers). Two bounds, so that the
// pool does not shrink and grow back at every batch of a steady stream.
const (
	backlogHigh = maxBatch
	backlogLow  = 32
)

// inboxSize bounds the messages received from NATS and not yet fanned out.
// Fan-out only enqueues (tens of nanoseconds per connection), so this is a
// burst buffer; when it is full nats.go drops and reports a slow consumer.
const inboxSize = 1 << 16

// ErrClosed: the engine is closing.
var ErrClosed = errors.New("fanout: closed")

// New subscribes to the instance's direct subject; Start starts the
// dispatcher.
func New(cfg Config) (*Engine, error) {
	e := &Engine{
		cfg:     cfg,
		inbox:   make(chan *nats.Msg, inboxSize),
		topics:  make(map[string]*Topic),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		prefix:  len(cfg.DirectSubject) - 1,
		writers: NewWriters(),
	}
	e.writers.behind = e.behind.Load
	var err error
	// Every connection-targeted message for this instance arrives on one
	// subscription; the connection is found by the subject's last token.
	if e.direct, err = cfg.NC.ChanSubscribe(cfg.DirectSubject, e.inbox); err != nil {
		return nil, err
	}
	return e, nil
}

// Writers is the pool that writes the queues of this engine's members.
func (e *Engine) Writers() *Writers { return e.writers }

// Start runs the dispatcher until Stop.
func (e *Engine) Start() {
	e.started = true
	e.dispatching.Store(true)
	go e.dispatch()
}

// Acquire returns the topic for subj, subscribing on first use, once the
// NATS server has the subscription: a message published after Acquire
// returns reaches it. Each Acquire needs a Release.
func (e *Engine) Acquire(kind int, name, subj string) (*Topic, error) {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	t := e.topics[subj]
	created := t == nil
	if created {
		sub, err := e.cfg.NC.ChanSubscribe(subj, e.inbox)
		if err != nil {
			e.mu.Unlock()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		t = &Topic{Subject: subj, Kind: kind, Name: name, sub: sub, ready: make(chan struct{}), members: make(map[Member]struct{})}
		e.topics[subj] = t
	}
	t.refs++
	e.mu.Unlock()
	if created {
		t.err = e.cfg.NC.FlushTimeout(e.cfg.SubscribeTimeout)
		close(t.ready)
	}
	<-t.ready
	if t.err != nil {
		e.Release(t)
		return nil, fmt.Errorf("subscribe: %w", t.err)
	}
	return t, nil
}

// Release drops one reference to t, unsubscribing when none is left.
func (e *Engine) Release(t *Topic) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t.refs--; t.refs == 0 {
		delete(e.topics, t.Subject)
		_ = t.sub.Unsubscribe()
	}
}

// Notify delivers f, a notice that is not a message (no id, never
// stored), to the local members of subject's topic, if any.
func (e *Engine) Notify(subject string, f *wire.Frame) {
	if t := e.Lookup(subject); t != nil {
		t.fanout([]*wire.Frame{f}, nil, nil)
	}
}

// Rooms returns the rooms with local members, and how many.
func (e *Engine) Rooms() []stats.Room {
	e.mu.RLock()
	defer e.mu.RUnlock()
	rooms := make([]stats.Room, 0, len(e.topics))
	for _, t := range e.topics {
		if t.Kind == wire.KindRoom {
			rooms = append(rooms, stats.Room{Name: t.Name, Members: t.Members()})
		}
	}
	return rooms
}

// Topics returns the number of subscribed topics.
func (e *Engine) Topics() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.topics)
}

// Close refuses new topics.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closing = true
	e.mu.Unlock()
}

// Stop ends the dispatcher and the direct subscription. It may be called
// more than once, and without Start.
func (e *Engine) Stop() {
	e.stopped.Do(func() {
		close(e.stop)
		if e.started {
			<-e.done
		}
		_ = e.direct.Unsubscribe()
	})
}

// The dispatcher takes at most maxBatch messages from its inbox at once, and
// ends a run at maxRunFrames frames or maxRunBytes of them: a member's
// queue must hold a whole run (default bounds: 1024 frames, 4 MiB), and the
// topic's read lock is held while it is fanned out.
const (
	maxBatch     = 256
	maxRunFrames = 64
	maxRunBytes  = 256 << 10
)

// dispatch fans every message from NATS out to local members. It takes
// every message waiting (up to maxBatch) and fans consecutive messages of one
// topic out together: each member gets the whole run queued at once, so its
// writer finds it complete and writes it with one system call, and the
// topic's members are walked once per run instead of once per message.
// Order is NATS's: runs are consecutive, and a direct message or a repair
// ends the run before it.
func (e *Engine) dispatch() {
	defer close(e.done)
	defer e.writers.Resume() // what it held back, now that nothing will take the inbox
	defer e.behind.Store(false)
	defer e.admitted(true)
	defer e.dispatching.Store(false)
	var (
		slow     []Member
		batch    []*nats.Msg
		run      []*wire.Frame
		runT     *Topic
		runBytes int
	)
	flush := func() {
		if len(run) > 0 {
			slow = runT.fanout(run, slow, e.cfg.Stats)
			clear(run)
			run, runBytes = run[:0], 0
		}
	}
	for {
		select {
		case m := <-e.inbox:
			e.taken.Store(true)
			batch = append(batch[:0], m)
		case <-e.stop:
			return
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case m := <-e.inbox:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		if len(e.inbox) >= backlogHigh && !e.behind.Load() {
			e.behind.Store(true)
		}
		for i, m := range batch {
			batch[i] = nil
			t, f := e.prepare(m, flush, &slow)
			if f == nil {
				continue
			}
			if t != runT || len(run) == maxRunFrames || runBytes+len(f.JSON) > maxRunBytes {
				flush()
				runT = t
			}
			run = append(run, f)
			runBytes += len(f.JSON)
		}
		flush()
		runT = nil
		e.taken.Store(false)
		if len(e.inbox) < backlogLow {
			e.caughtUp()
		}
		e.admitted(false)
	}
}

// caughtUp ends the dispatcher's being behind, and gives the writers back
// the CPU it was taking.
func (e *Engine) caughtUp() {
	if e.behind.Load() {
		e.behind.Store(false)
		e.writers.Resume()
	}
}

// prepare decodes m and returns its topic and frame, or a nil frame when m
// was handled (a direct message), dropped or already delivered. flush ends
// the current run before anything that must come after it is delivered.
func (e *Engine) prepare(m *nats.Msg, flush func(), slow *[]Member) (*Topic, *wire.Frame) {
	env, err := wire.ParseEnvelope(m.Data)
	if err == nil {
		var ok bool
		env.Data, ok = wire.CompactJSON(env.Data)
		if !ok || len(env.Data) == 0 {
			err = errors.New("data is not one JSON value")
		}
	}
	if err != nil {
		e.cfg.Log.Warn("pubsub: dropping malformed message", "subject", m.Subject, "err", err)
		return nil, nil
	}
	stored := env.ID == ""
	var prev uint64
	if stored { // stored, then republished by the history stream
		env.ID = m.Header.Get(jetstream.SequenceHeader)
		prev, _ = strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
	}
	if m.Sub == e.direct {
		if len(m.Subject) > e.prefix {
			flush()
			e.cfg.Direct(m.Subject[e.prefix:], e.frame(wire.KindConn, "", env))
		}
		return nil, nil
	}
	e.mu.RLock()
	t := e.topics[m.Subject]
	e.mu.RUnlock()
	if t == nil || t.sub != m.Sub {
		return nil, nil // unsubscribed while the message was queued
	}
	if stored {
		seq, _ := strconv.ParseUint(env.ID, 10, 64)
		if t.lastSeq != 0 && prev > t.lastSeq {
			flush()
			e.caughtUp() // it waits for the store: the writers can have the CPU meanwhile
			*slow = e.repair(t, prev, *slow)
		}
		if _, dup := t.repaired[seq]; dup {
			delete(t.repaired, seq)
			return nil, nil // delivered by a repair already
		}
		t.lastSeq = seq // a lower one: the store was reset
	}
	f := e.frame(t.Kind, t.Name, env)
	f.Stored, f.Prev = stored, prev
	return t, f
}

// frame builds a message's frame, once, stamped with its birth when the
// delivery delay is counted.
func (e *Engine) frame(kind int, name string, env wire.Envelope) *wire.Frame {
	f := wire.MessageFrame(kind, name, env)
	if e.cfg.Stats != nil {
		f.Born = e.cfg.Stats.Now()
	}
	return f
}

// Dispatched reports whether subj's topic has received at least n messages
// from NATS and the dispatcher has fanned out everything it received.
func (e *Engine) Dispatched(subj string, n int) bool {
	e.mu.RLock()
	t := e.topics[subj]
	e.mu.RUnlock()
	if t == nil {
		return false
	}
	got, _ := t.sub.Delivered()
	return got >= int64(n) && len(e.inbox) == 0 && !e.taken.Load()
}
