// Package presence is the distributed presence protocol: who is in a room,
// on every instance, on core NATS only.
//
// Each instance keeps its own connections per room and user (local), and
// publishes one small change per join and leave on the room's presence
// subject, numbered, naming the instance's previous change in that room: a
// view that sees a number it did not expect knows it missed one and asks
// every instance for a snapshot. Snapshots go out on the same subject as
// changes, so they arrive in order with them. Heartbeats bound how long a
// dead instance's entries live.
//
// Views (view.go) exist only for the rooms someone here asks about: a
// Presence call, or a connection watching the room's join and leave events
// (watch.go).
package presence

import (
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/subject"
)

// Config is a tracker's setup.
type Config struct {
	NC       *nats.Conn
	Log      *slog.Logger
	Subjects subject.Space
	Instance string
	// Timeout is how long an instance not heard from keeps its entries.
	Timeout time.Duration
	// FlushTimeout bounds the wait for a new subscription.
	FlushTimeout time.Duration
}

// Tracker keeps this instance's part of every room's presence and the
// views of the rooms asked about.
type Tracker struct {
	cfg      Config
	inbox    chan *nats.Msg
	querySub *nats.Subscription
	instSub  *nats.Subscription
	stop     chan struct{}
	done     chan struct{}
	halted   sync.Once

	localMu sync.Mutex // guards seq and local; held while publishing them, for order
	seq     uint64
	local   map[string]*localRoom

	mu         sync.Mutex
	closing    bool
	live       map[string]time.Time // instance → last heard from
	views      map[string]*roomView // by room
	madeBy     map[string]int       // views kept, by the asker that made them
	bySubject  map[string]*roomView
	watches    map[Watcher]map[string]*roomView // what each watcher watches
	reconnects uint64
	syncs      map[uint64]chan struct{} // by token
	nextSync   uint64
}

// localRoom is this instance's connections in one room, by user ("" for
// anonymous ones).
type localRoom struct {
	seq   uint64
	users map[string]int
}

// message is the NATS encoding of every presence message.
type message struct {
	Kind     string         `json:"k"`           // "change", "snapshot", "sync"; "query"; "beat", "hello", "bye"
	Instance string         `json:"i"`           // sender
	Room     string         `json:"r,omitempty"` // change, snapshot, query
	Seq      uint64         `json:"s,omitempty"` // change, snapshot: the sender's change number; sync: its token
	Prev     uint64         `json:"p,omitempty"` // change: the previous number in this room, 0 if it was empty
	User     string         `json:"u,omitempty"` // change
	Conns    int            `json:"n,omitempty"` // change: the user's connections now
	Users    map[string]int `json:"m,omitempty"` // snapshot
	First    bool           `json:"f,omitempty"` // snapshot: first chunk
	Last     bool           `json:"l,omitempty"` // snapshot: last chunk
	Target   string         `json:"t,omitempty"` // query: only this instance answers
}

// chunk bounds a snapshot message (NATS payloads are limited).
const chunk = 32 << 10

// New returns a tracker; Start connects it.
func New(cfg Config) *Tracker {
	return &Tracker{
		cfg:       cfg,
		inbox:     make(chan *nats.Msg, 4096),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		local:     make(map[string]*localRoom),
		live:      map[string]time.Time{cfg.Instance: time.Now()},
		views:     make(map[string]*roomView),
		madeBy:    make(map[string]int),
		bySubject: make(map[string]*roomView),
		watches:   make(map[Watcher]map[string]*roomView),
		syncs:     make(map[uint64]chan struct{}),
	}
}

// Start subscribes to queries and heartbeats, announces this instance and
// starts the loop.
func (p *Tracker) Start() error {
	var err error
	if p.querySub, err = p.cfg.NC.ChanSubscribe(p.cfg.Subjects.PresenceQuery(), p.inbox); err != nil {
		return err
	}
	if p.instSub, err = p.cfg.NC.ChanSubscribe(p.cfg.Subjects.Instances(), p.inbox); err != nil {
		return err
	}
	p.reconnects = p.cfg.NC.Stats().Reconnects
	p.beat("hello")
	go p.loop()
	return nil
}

// Close refuses new views: the broker is shutting down.
func (p *Tracker) Close() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
}

// Shutdown says goodbye, so other instances drop this one at once, and
// stops the loop. It may be called more than once.
func (p *Tracker) Shutdown() {
	first := false
	p.halted.Do(func() { first = true })
	if first {
		p.beat("bye")
		close(p.stop)
	}
	<-p.done
	p.Unsubscribe()
}

// halt stops the loop without a goodbye, as a dead instance does.
func (p *Tracker) halt() {
	p.halted.Do(func() { close(p.stop) })
	<-p.done
}

// Unsubscribe removes every presence subscription: on a connection the
// host owns they would outlive the broker.
func (p *Tracker) Unsubscribe() {
	for _, sub := range []*nats.Subscription{p.querySub, p.instSub} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for room, r := range p.views {
		_ = r.sub.Unsubscribe()
		p.forget(r)
		delete(p.views, room)
		delete(p.bySubject, r.sub.Subject)
	}
}

func (p *Tracker) publish(subj string, m *message) {
	payload, _ := json.Marshal(m)
	if err := p.cfg.NC.Publish(subj, payload); err != nil {
		p.cfg.Log.Debug("pubsub: presence publish", "err", err)
	}
}

func (p *Tracker) beat(kind string) {
	p.publish(p.cfg.Subjects.Instances(), &message{Kind: kind, Instance: p.cfg.Instance})
}

// Instances returns the number of instances this one knows to be alive,
// itself included.
func (p *Tracker) Instances() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.live)
}

// Joined and Left record a local connection of user entering or leaving
// room. Call them in the order the connection's joins and leaves happen.
func (p *Tracker) Joined(room, user string) { p.change(room, user, 1) }
func (p *Tracker) Left(room, user string)   { p.change(room, user, -1) }

func (p *Tracker) change(room, user string, delta int) {
	p.localMu.Lock()
	defer p.localMu.Unlock()
	lr := p.local[room]
	if lr == nil {
		if delta < 0 {
			return
		}
		lr = &localRoom{users: make(map[string]int)}
		p.local[room] = lr
	}
	n := lr.users[user] + delta
	if n <= 0 {
		delete(lr.users, user)
		n = 0
	} else {
		lr.users[user] = n
	}
	p.seq++
	m := &message{Kind: "change", Instance: p.cfg.Instance, Room: room, Seq: p.seq, Prev: lr.seq, User: user, Conns: n}
	lr.seq = p.seq
	if len(lr.users) == 0 {
		delete(p.local, room) // the next change starts again from Prev 0
	}
	p.publish(p.cfg.Subjects.Presence(room), m)
}

// answer publishes this instance's snapshot of a room, in chunks, on the
// room's presence subject: under localMu, so that it is ordered with the
// changes around it.
func (p *Tracker) answer(q *message) {
	if subject.ValidRoom(q.Room) != nil || (q.Target != "" && q.Target != p.cfg.Instance) {
		return
	}
	subj := p.cfg.Subjects.Presence(q.Room)
	p.localMu.Lock()
	defer p.localMu.Unlock()
	m := &message{Kind: "snapshot", Instance: p.cfg.Instance, Room: q.Room, First: true, Users: map[string]int{}}
	size := 0
	if lr := p.local[q.Room]; lr != nil {
		m.Seq = lr.seq
		for u, n := range lr.users {
			if size > chunk {
				p.publish(subj, m)
				m = &message{Kind: "snapshot", Instance: p.cfg.Instance, Room: q.Room, Seq: lr.seq, Users: map[string]int{}}
				size = 0
			}
			m.Users[u] = n
			size += len(u) + 16
		}
	}
	m.Last = true
	p.publish(subj, m)
}

// loop handles presence messages and, every timeout/3, sends a heartbeat
// and expires what is stale.
func (p *Tracker) loop() {
	defer close(p.done)
	tick := time.NewTicker(p.cfg.Timeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			p.beat("beat")
			p.sweep(now)
		case m := <-p.inbox:
			var pm message
			if json.Unmarshal(m.Data, &pm) != nil || pm.Instance == "" {
				p.cfg.Log.Warn("pubsub: dropping malformed presence message", "subject", m.Subject)
				continue
			}
			switch m.Sub {
			case p.querySub:
				p.answer(&pm)
			case p.instSub:
				p.heard(&pm)
			default:
				p.apply(m, &pm)
			}
		}
	}
}

// heard handles a heartbeat.
func (p *Tracker) heard(m *message) {
	if m.Instance == p.cfg.Instance {
		return
	}
	if m.Kind == "hello" {
		p.beat("beat") // so the newcomer learns about this instance at once
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.Kind == "bye" {
		if _, known := p.live[m.Instance]; known {
			p.cfg.Log.Info("pubsub: an instance shut down", "instance", m.Instance)
		}
		p.dropInstance(m.Instance)
		return
	}
	_, known := p.live[m.Instance]
	p.live[m.Instance] = time.Now()
	switch {
	case !known && m.Kind == "hello":
		p.cfg.Log.Info("pubsub: an instance joined", "instance", m.Instance)
	case !known:
		p.cfg.Log.Info("pubsub: an instance is heard again (it was cut off or paused)", "instance", m.Instance)
	}
	if !known || m.Kind == "hello" {
		// Back from a partition, new, or reconnected to NATS: whatever
		// views have of it may be stale or missing.
		for _, r := range p.views {
			r.stale = true
		}
	}
}

// linger keeps a view alive after its last use, so that repeated Presence
// calls stay answers from memory.
const linger = 30 * time.Second

// sweep drops dead instances and idle views, asks for snapshots where a
// view saw a gap, and resynchronizes everything after a NATS reconnect
// (messages may have been lost while disconnected).
func (p *Tracker) sweep(now time.Time) {
	reconnects := p.cfg.NC.Stats().Reconnects
	p.mu.Lock()
	defer p.mu.Unlock()
	for inst, seen := range p.live {
		if inst != p.cfg.Instance && now.Sub(seen) > p.cfg.Timeout {
			p.cfg.Log.Warn("pubsub: an instance stopped answering (no heartbeat); dropping its connections from presence",
				"instance", inst, "silent_for", now.Sub(seen).Round(time.Second))
			p.dropInstance(inst)
		}
	}
	resyncAll := reconnects != p.reconnects
	p.reconnects = reconnects
	if resyncAll {
		// Changes of ours may have been lost too: others must ask again.
		p.beat("hello")
	}
	for room, r := range p.views {
		if r.refs == 0 && now.Sub(r.idleSince) > linger {
			p.forget(r)
			delete(p.views, room)
			delete(p.bySubject, r.sub.Subject)
			_ = r.sub.Unsubscribe()
			continue
		}
		if (r.stale || resyncAll) && now.Sub(r.asked) > time.Second {
			p.query(r)
		}
	}
}

// dropInstance removes a dead instance from every view.
func (p *Tracker) dropInstance(inst string) {
	delete(p.live, inst)
	for _, r := range p.views {
		if st := r.instances[inst]; st != nil {
			var ev events
			r.replace(inst, nil, 0, &ev)
			r.send(ev)
		}
		delete(r.waiting, inst)
		delete(r.snapshots, inst)
		r.checkReady()
	}
}

// query asks every instance for its snapshot of r's room. Called with p.mu.
func (p *Tracker) query(r *roomView) {
	r.asked = time.Now()
	r.stale = false
	p.publish(p.cfg.Subjects.PresenceQuery(), &message{Kind: "query", Instance: p.cfg.Instance, Room: r.room})
}

// apply handles a change or snapshot on a view's subject.
func (p *Tracker) apply(m *nats.Msg, pm *message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.bySubject[m.Subject]
	if r == nil || r.sub != m.Sub || pm.Room != r.room {
		return
	}
	p.live[pm.Instance] = time.Now() // so that it expires if it dies now
	var ev events
	switch pm.Kind {
	case "sync":
		if ch := p.syncs[pm.Seq]; ch != nil && pm.Instance == p.cfg.Instance {
			delete(p.syncs, pm.Seq)
			close(ch)
		}
	case "change":
		st := r.instances[pm.Instance]
		switch {
		case st == nil && pm.Prev == 0, st != nil && st.seq == pm.Prev:
			r.set(pm.Instance, pm.User, pm.Conns, pm.Seq, &ev)
		case st != nil && pm.Seq <= st.seq:
			// already seen
		default:
			// A change was lost (or the view started after this room's
			// first one): a snapshot will set things right. A snapshot in
			// progress would have come before this change: its end was lost.
			delete(r.snapshots, pm.Instance)
			r.stale = true
			if time.Since(r.asked) > time.Second {
				p.query(r)
			}
		}
	case "snapshot":
		if pm.First {
			r.snapshots[pm.Instance] = map[string]int{}
		}
		users, ok := r.snapshots[pm.Instance]
		if !ok {
			return // joined mid-snapshot: wait for the next one
		}
		for u, n := range pm.Users {
			users[u] = n
		}
		if !pm.Last {
			return
		}
		delete(r.snapshots, pm.Instance)
		r.replace(pm.Instance, users, pm.Seq, &ev)
		delete(r.waiting, pm.Instance)
		r.checkReady()
	}
	r.send(ev)
}

// forget releases what r counted against the asker that made it. Call with
// p.mu held, when r goes.
func (p *Tracker) forget(r *roomView) {
	if r.madeBy == "" {
		return
	}
	if p.madeBy[r.madeBy]--; p.madeBy[r.madeBy] <= 0 {
		delete(p.madeBy, r.madeBy)
	}
}
