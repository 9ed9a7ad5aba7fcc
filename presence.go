package pubsub

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Presence is who is in a room, across every instance: one page of its
// members, and counts of the whole room. It encodes to JSON as the
// client's presence frame does.
type Presence struct {
	// Count is the number of distinct users in the room. A user with two
	// tabs open is one member.
	Count int `json:"count"`
	// Conns is the number of connections in the room, anonymous ones
	// (connections without a user) included.
	Conns int `json:"conns"`
	// Members is one page of the room's users, ordered by user id.
	Members []Member `json:"members"`
	// Next is the cursor of the following page (the after argument of
	// PresencePage), or "" on the last page.
	Next string `json:"next,omitempty"`
}

// Member is one user in a room.
type Member struct {
	User  string `json:"user"`
	Conns int    `json:"conns"` // the user's connections in the room, on all instances
}

// Presence defaults and bounds.
const (
	// DefaultPresenceTimeout is how long the entries of an instance that
	// stopped answering (killed, partitioned away) stay in presence.
	DefaultPresenceTimeout = 15 * time.Second
	// DefaultPresencePage is the page size of Presence and of a client's
	// presence request without a limit; MaxPresencePage bounds any page.
	DefaultPresencePage = 100
	MaxPresencePage     = 1000
)

// WithPresenceTimeout bounds how long a dead instance's connections stay in
// presence: every instance sends a heartbeat every d/3, and one not heard
// from for d is dropped from every room. An instance that shuts down
// normally is dropped at once. Default 15s.
func WithPresenceTimeout(d time.Duration) Option {
	return func(c *config) { c.presenceTimeout = d }
}

// Presence reports who is in room, on every instance: the counts and the
// first page of members (DefaultPresencePage). A connection is in a room
// from its subscription (or Conn.Join) until it leaves or closes.
//
// Presence is kept by each instance for the rooms someone asks about: the
// first call for a room gathers a snapshot from every instance (one round
// trip); later calls, and the counts, are answered from memory, kept up to
// date by one small NATS message per join and leave.
func (b *Broker) Presence(ctx context.Context, room string) (Presence, error) {
	return b.PresencePage(ctx, room, "", DefaultPresencePage)
}

// PresencePage is Presence for the page of at most limit members (1 to
// MaxPresencePage) whose user ids sort after after.
func (b *Broker) PresencePage(ctx context.Context, room, after string, limit int) (Presence, error) {
	if err := subject.ValidRoom(room); err != nil {
		return Presence{}, fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	if limit < 1 || limit > MaxPresencePage {
		return Presence{}, fmt.Errorf("pubsub: presence page limit must be 1 to %d", MaxPresencePage)
	}
	r, err := b.pres.acquire(ctx, room)
	if err != nil {
		return Presence{}, err
	}
	defer b.pres.release(r)
	b.pres.mu.Lock()
	defer b.pres.mu.Unlock()
	return r.page(after, limit), nil
}

// presence keeps this instance's own part of every room's presence, and,
// for the rooms someone here asks about, a view of the whole room.
//
// Each instance numbers its presence changes; a change message carries the
// number of the instance's previous change in the same room, so a view sees
// a lost message as a gap and asks for a fresh snapshot. Snapshots are
// published on the same subject as changes, so they arrive in order with
// them. Heartbeats bound how long a dead instance's entries live.
type presence struct {
	b        *Broker
	timeout  time.Duration
	inbox    chan *nats.Msg
	querySub *nats.Subscription
	instSub  *nats.Subscription
	stop     chan struct{}
	done     chan struct{}

	localMu sync.Mutex // guards seq and local; held while publishing them, for order
	seq     uint64
	local   map[string]*localRoom

	mu         sync.Mutex
	live       map[string]time.Time // instance → last heard from
	views      map[string]*roomView // by room
	bySubject  map[string]*roomView
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

// presenceMsg is the NATS encoding of every presence message.
type presenceMsg struct {
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

// presenceChunk bounds a snapshot message (NATS payloads are limited).
const presenceChunk = 32 << 10

// presenceLinger keeps a view alive after its last use, so that repeated
// Presence calls stay answers from memory.
const presenceLinger = 30 * time.Second

// maxPresenceViews bounds the rooms an instance keeps presence views of
// (watched, or asked about in the last presenceLinger), so that clients
// asking about ever new rooms cannot grow it without end.
const maxPresenceViews = 10000

// presenceReadyTimeout bounds the wait for every instance's first snapshot.
const presenceReadyTimeout = 2 * time.Second

func newPresence(b *Broker) *presence {
	return &presence{
		b:         b,
		timeout:   b.cfg.presenceTimeout,
		inbox:     make(chan *nats.Msg, 4096),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		local:     make(map[string]*localRoom),
		live:      map[string]time.Time{b.instance: time.Now()},
		views:     make(map[string]*roomView),
		bySubject: make(map[string]*roomView),
		syncs:     make(map[uint64]chan struct{}),
	}
}

// start subscribes to queries and heartbeats, announces this instance and
// starts the loop.
func (p *presence) start() error {
	var err error
	if p.querySub, err = p.b.nc.ChanSubscribe(p.b.subjects.PresenceQuery(), p.inbox); err != nil {
		return err
	}
	if p.instSub, err = p.b.nc.ChanSubscribe(p.b.subjects.Instances(), p.inbox); err != nil {
		return err
	}
	p.reconnects = p.b.nc.Stats().Reconnects
	p.beat("hello")
	go p.loop()
	return nil
}

// shutdown says goodbye, so other instances drop this one at once, and
// stops the loop.
func (p *presence) shutdown() {
	p.beat("bye")
	close(p.stop)
	<-p.done
	p.unsubscribe()
}

// unsubscribe removes every presence subscription: on a connection the
// host owns (WithNATSConn) they would outlive the broker.
func (p *presence) unsubscribe() {
	for _, sub := range []*nats.Subscription{p.querySub, p.instSub} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for room, r := range p.views {
		_ = r.sub.Unsubscribe()
		delete(p.views, room)
		delete(p.bySubject, r.sub.Subject)
	}
}

func (p *presence) publish(subj string, m *presenceMsg) {
	payload, _ := json.Marshal(m)
	if err := p.b.nc.Publish(subj, payload); err != nil {
		p.b.log.Debug("pubsub: presence publish", "err", err)
	}
}

func (p *presence) beat(kind string) {
	p.publish(p.b.subjects.Instances(), &presenceMsg{Kind: kind, Instance: p.b.instance})
}

// joined and left record a local connection entering or leaving room.
func (p *presence) joined(room, user string) { p.change(room, user, 1) }
func (p *presence) left(room, user string)   { p.change(room, user, -1) }

func (p *presence) change(room, user string, delta int) {
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
	m := &presenceMsg{Kind: "change", Instance: p.b.instance, Room: room, Seq: p.seq, Prev: lr.seq, User: user, Conns: n}
	lr.seq = p.seq
	if len(lr.users) == 0 {
		delete(p.local, room) // the next change starts again from Prev 0
	}
	p.publish(p.b.subjects.Presence(room), m)
}

// answer publishes this instance's snapshot of a room, in chunks, on the
// room's presence subject: under localMu, so that it is ordered with the
// changes around it.
func (p *presence) answer(q *presenceMsg) {
	if subject.ValidRoom(q.Room) != nil || (q.Target != "" && q.Target != p.b.instance) {
		return
	}
	subj := p.b.subjects.Presence(q.Room)
	p.localMu.Lock()
	defer p.localMu.Unlock()
	m := &presenceMsg{Kind: "snapshot", Instance: p.b.instance, Room: q.Room, First: true, Users: map[string]int{}}
	size := 0
	if lr := p.local[q.Room]; lr != nil {
		m.Seq = lr.seq
		for u, n := range lr.users {
			if size > presenceChunk {
				p.publish(subj, m)
				m = &presenceMsg{Kind: "snapshot", Instance: p.b.instance, Room: q.Room, Seq: lr.seq, Users: map[string]int{}}
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
func (p *presence) loop() {
	defer close(p.done)
	tick := time.NewTicker(p.timeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			p.beat("beat")
			p.sweep(now)
		case m := <-p.inbox:
			var pm presenceMsg
			if json.Unmarshal(m.Data, &pm) != nil || pm.Instance == "" {
				p.b.log.Warn("pubsub: dropping malformed presence message", "subject", m.Subject)
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
func (p *presence) heard(m *presenceMsg) {
	if m.Instance == p.b.instance {
		return
	}
	if m.Kind == "hello" {
		p.beat("beat") // so the newcomer learns about this instance at once
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.Kind == "bye" {
		p.dropInstance(m.Instance)
		return
	}
	_, known := p.live[m.Instance]
	p.live[m.Instance] = time.Now()
	if !known || m.Kind == "hello" {
		// Back from a partition, new, or reconnected to NATS: whatever
		// views have of it may be stale or missing.
		for _, r := range p.views {
			r.stale = true
		}
	}
}

// sweep drops dead instances and idle views, asks for snapshots where a
// view saw a gap, and resynchronizes everything after a NATS reconnect
// (messages may have been lost while disconnected).
func (p *presence) sweep(now time.Time) {
	reconnects := p.b.nc.Stats().Reconnects
	p.mu.Lock()
	defer p.mu.Unlock()
	for inst, seen := range p.live {
		if inst != p.b.instance && now.Sub(seen) > p.timeout {
			p.b.log.Info("pubsub: instance timed out, dropping its presence", "instance", inst)
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
		if r.refs == 0 && now.Sub(r.idleSince) > presenceLinger {
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
func (p *presence) dropInstance(inst string) {
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
func (p *presence) query(r *roomView) {
	r.asked = time.Now()
	r.stale = false
	p.publish(p.b.subjects.PresenceQuery(), &presenceMsg{Kind: "query", Instance: p.b.instance, Room: r.room})
}

// apply handles a change or snapshot on a view's subject.
func (p *presence) apply(m *nats.Msg, pm *presenceMsg) {
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
		if ch := p.syncs[pm.Seq]; ch != nil && pm.Instance == p.b.instance {
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

// roomView is an instance's view of one room's presence on all instances.
// Guarded by presence.mu.
type roomView struct {
	p         *presence
	room      string
	sub       *nats.Subscription
	refs      int // Presence calls in progress and watching connections
	idleSince time.Time
	asked     time.Time // last snapshot query
	stale     bool      // a gap was seen: query again

	instances map[string]*instanceUsers
	snapshots map[string]map[string]int // chunked snapshots being received, by instance
	users     map[string]int            // connections per user, all instances ("" anonymous)
	conns     int
	sorted    []string // member ids in order; nil when membership changed

	watchers map[*Conn]struct{}
	waiting  map[string]bool // instances whose first snapshot is awaited
	ready    chan struct{}
	isReady  bool
}

// instanceUsers is one instance's part of a room.
type instanceUsers struct {
	seq   uint64
	users map[string]int
}

// events are the joins and leaves one update caused.
type events []wire.PresenceEvent

// set records that inst now has n connections of user in the room.
func (r *roomView) set(inst, user string, n int, seq uint64, ev *events) {
	st := r.instances[inst]
	if st == nil {
		st = &instanceUsers{users: make(map[string]int)}
		r.instances[inst] = st
	}
	st.seq = seq
	r.setCount(st, user, n, ev)
	if len(st.users) == 0 {
		delete(r.instances, inst) // as the instance forgets the room
	}
}

// replace makes users (nil: none) inst's whole part of the room.
func (r *roomView) replace(inst string, users map[string]int, seq uint64, ev *events) {
	st := r.instances[inst]
	if st == nil {
		st = &instanceUsers{users: make(map[string]int)}
		r.instances[inst] = st
	}
	st.seq = seq
	for u := range st.users {
		if _, ok := users[u]; !ok {
			r.setCount(st, u, 0, ev)
		}
	}
	for u, n := range users {
		r.setCount(st, u, n, ev)
	}
	if len(st.users) == 0 {
		delete(r.instances, inst)
	}
}

func (r *roomView) setCount(st *instanceUsers, user string, n int, ev *events) {
	if n < 0 {
		n = 0
	}
	old := st.users[user]
	if n == old {
		return
	}
	if n == 0 {
		delete(st.users, user)
	} else {
		st.users[user] = n
	}
	r.conns += n - old
	before := r.users[user]
	after := before + n - old
	if after <= 0 {
		delete(r.users, user)
	} else {
		r.users[user] = after
	}
	if user == "" {
		return
	}
	switch {
	case before == 0 && after > 0:
		r.sorted = nil
		*ev = append(*ev, wire.PresenceEvent{Join: true, User: user})
	case before > 0 && after <= 0:
		r.sorted = nil
		*ev = append(*ev, wire.PresenceEvent{User: user})
	}
}

// count is the number of distinct users.
func (r *roomView) count() int {
	n := len(r.users)
	if _, anon := r.users[""]; anon {
		n--
	}
	return n
}

// send queues ev on every watching connection.
func (r *roomView) send(ev events) {
	if len(ev) == 0 || len(r.watchers) == 0 {
		return
	}
	var frames []*wire.Frame
	if len(ev) > presenceBurst {
		// Many users at once (an instance died, a resync): one fresh
		// snapshot says it in one frame, where events could fill queues.
		frames = []*wire.Frame{wire.PresenceFrame(r.room, r.presencePage("", DefaultPresencePage), nil)}
	} else {
		count := r.count()
		for _, e := range ev {
			e.Count = count // the count after the whole update
			frames = append(frames, wire.PresenceEventFrame(r.room, e))
		}
	}
	for c := range r.watchers {
		for _, f := range frames {
			if !c.enqueue(f) {
				go c.closeSlow() // closing unwatches, which needs presence.mu
				break
			}
		}
	}
}

// presenceBurst is the most join and leave events one update sends; past
// it, watchers get a presence frame instead.
const presenceBurst = 32

func (r *roomView) checkReady() {
	if !r.isReady && len(r.waiting) == 0 {
		r.isReady = true
		close(r.ready)
	}
}

// page returns the counts and up to limit members after the cursor.
func (r *roomView) page(after string, limit int) Presence {
	if r.sorted == nil {
		r.sorted = make([]string, 0, len(r.users))
		for u := range r.users {
			if u != "" {
				r.sorted = append(r.sorted, u)
			}
		}
		sort.Strings(r.sorted)
	}
	i := 0
	if after != "" {
		i, _ = slices.BinarySearch(r.sorted, after)
		if i < len(r.sorted) && r.sorted[i] == after {
			i++
		}
	}
	end := min(i+limit, len(r.sorted))
	ps := Presence{Count: r.count(), Conns: r.conns, Members: make([]Member, 0, end-i)}
	for _, u := range r.sorted[i:end] {
		ps.Members = append(ps.Members, Member{User: u, Conns: r.users[u]})
	}
	if end < len(r.sorted) {
		ps.Next = r.sorted[end-1]
	}
	return ps
}

// acquire returns the view of room, created and synchronized with every
// known instance (or after presenceReadyTimeout) on first use. The caller
// must release it.
func (p *presence) acquire(ctx context.Context, room string) (*roomView, error) {
	p.mu.Lock()
	if p.b.isClosing() {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	r := p.views[room]
	if r == nil {
		if len(p.views) >= maxPresenceViews {
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: presence is kept for at most %d rooms per instance", ErrTooManyRooms, maxPresenceViews)
		}
		sub, err := p.b.nc.ChanSubscribe(p.b.subjects.Presence(room), p.inbox)
		if err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("pubsub: presence: %w", err)
		}
		r = &roomView{
			p: p, room: room, sub: sub,
			instances: make(map[string]*instanceUsers),
			snapshots: make(map[string]map[string]int),
			users:     make(map[string]int),
			watchers:  make(map[*Conn]struct{}),
			waiting:   make(map[string]bool),
			ready:     make(chan struct{}),
		}
		for inst := range p.live {
			r.waiting[inst] = true
		}
		p.views[room] = r
		p.bySubject[sub.Subject] = r
		r.refs++
		p.mu.Unlock()
		// The subscription must be in place before the query goes out, or
		// an answer could pass it by.
		if err := p.b.nc.FlushTimeout(p.b.cfg.writeTimeout); err != nil {
			p.b.log.Warn("pubsub: presence subscribe", "room", room, "err", err)
		}
		p.mu.Lock()
		r.refs--
		p.query(r)
		time.AfterFunc(presenceReadyTimeout, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !r.isReady {
				p.b.log.Debug("pubsub: presence: instances did not answer in time", "room", room, "missing", len(r.waiting))
				clear(r.waiting)
				r.checkReady()
			}
		})
	}
	r.refs++
	p.mu.Unlock()
	select {
	case <-r.ready:
		return r, nil
	case <-ctx.Done():
		p.release(r)
		return nil, ctx.Err()
	}
}

func (p *presence) release(r *roomView) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.unref()
}

// unref drops a reference, starting the view's linger when it was the
// last. Called with presence.mu.
func (r *roomView) unref() {
	if r.refs--; r.refs == 0 {
		r.idleSince = time.Now()
	}
}

// watch makes c receive room's join and leave events, after a presence
// frame with the room's first page (so no event is missed in between).
func (p *presence) watch(c *Conn, room string) error {
	r, err := p.acquire(c.ctx, room)
	if err != nil {
		return err
	}
	p.sync(c.ctx, room)
	p.mu.Lock()
	defer p.mu.Unlock()
	c.mu.Lock()
	_, subscribed := c.rooms[room]
	_, watching := c.watching[room]
	if c.closing || !subscribed || watching {
		c.mu.Unlock()
		r.unref()
		return nil
	}
	if c.watching == nil {
		c.watching = make(map[string]*roomView)
	}
	c.watching[room] = r
	ok, start := c.enqueueLocked(wire.PresenceFrame(room, r.presencePage("", DefaultPresencePage), nil))
	c.mu.Unlock()
	r.watchers[c] = struct{}{}
	if start {
		go c.writeLoop()
	}
	if !ok {
		go c.closeSlow()
	}
	return nil
}

// sync waits until the view of room has every change this instance made
// in it so far, so that a client's first presence frame includes its own
// connection: a marker published after them comes back after them.
func (p *presence) sync(ctx context.Context, room string) {
	p.mu.Lock()
	p.nextSync++
	token, ch := p.nextSync, make(chan struct{})
	p.syncs[token] = ch
	p.mu.Unlock()
	p.localMu.Lock() // ordered after changes being published
	p.publish(p.b.subjects.Presence(room), &presenceMsg{Kind: "sync", Instance: p.b.instance, Room: room, Seq: token})
	p.localMu.Unlock()
	t := time.NewTimer(presenceReadyTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return
	case <-ctx.Done():
	case <-t.C:
	}
	p.mu.Lock()
	delete(p.syncs, token)
	p.mu.Unlock()
}

// unwatch stops the events of the views c watched (taken from c under its
// lock).
func (p *presence) unwatch(c *Conn, views []*roomView) {
	if len(views) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range views {
		if _, ok := r.watchers[c]; ok {
			delete(r.watchers, c)
			r.unref()
		}
	}
}

func (r *roomView) presencePage(after string, limit int) wire.PresencePage {
	ps := r.page(after, limit)
	pg := wire.PresencePage{Count: ps.Count, Conns: ps.Conns, Next: ps.Next, Members: make([]wire.Member, len(ps.Members))}
	for i, m := range ps.Members {
		pg.Members[i] = wire.Member{User: m.User, Conns: m.Conns}
	}
	return pg
}

// clientPresence answers a client's "presence" frame, authorized like a
// subscription.
func (c *Conn) clientPresence(f wire.ClientFrame) {
	if err := subject.ValidRoom(f.Room); err != nil {
		c.reply(wire.Error("invalid_room", "invalid room name: "+err.Error(), truncate(f.Room), f.Ref))
		return
	}
	if err := c.authorize(c.b.cfg.authSubscribe, "presence", f.Room); err != nil {
		c.reply(wire.Error("forbidden", "not allowed to see this room", f.Room, f.Ref))
		return
	}
	if f.Limit < 0 || f.Limit > MaxPresencePage {
		c.reply(wire.Error("bad_request", fmt.Sprintf(`"limit" must be 0 to %d`, MaxPresencePage), f.Room, f.Ref))
		return
	}
	p := c.b.pres
	r, err := p.acquire(c.ctx, f.Room)
	if errors.Is(err, ErrTooManyRooms) {
		c.reply(wire.Error("too_many_rooms", "presence is not available for more rooms now", f.Room, f.Ref))
		return
	}
	if err != nil {
		if !c.b.isClosing() {
			c.b.log.Error("pubsub: presence", "room", f.Room, "err", err)
			c.reply(wire.Error("internal", "presence failed", f.Room, f.Ref))
		}
		return
	}
	defer p.release(r)
	p.mu.Lock()
	pg := r.presencePage(f.After, cmp.Or(f.Limit, DefaultPresencePage))
	p.mu.Unlock()
	c.reply(wire.PresenceFrame(f.Room, pg, f.Ref))
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
