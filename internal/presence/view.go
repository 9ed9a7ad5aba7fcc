package presence

import (
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/wire"
)

// roomView is an instance's view of one room's presence on all instances.
// Guarded by Tracker.mu.
type roomView struct {
	room      string
	madeBy    string // the asker that made it (counted in Tracker.madeBy), "" for Go code
	sub       *nats.Subscription
	refs      int // Presence calls in progress and watchers
	idleSince time.Time
	asked     time.Time // last snapshot query
	stale     bool      // a gap was seen: query again

	instances map[string]*instanceUsers
	snapshots map[string]map[string]int // chunked snapshots being received, by instance
	users     map[string]int            // connections per user, all instances ("" anonymous)
	conns     int
	sorted    []string // member ids in order; nil when membership changed

	watchers map[Watcher]struct{}
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

// burst is the most join and leave events one update sends; past it,
// watchers get a presence frame instead.
const burst = 32

// DefaultPage is the page size of a fresh presence frame.
const DefaultPage = 100

// send queues ev on every watcher.
func (r *roomView) send(ev events) {
	if len(ev) == 0 || len(r.watchers) == 0 {
		return
	}
	var frames []*wire.Frame
	if len(ev) > burst {
		// Many users at once (an instance died, a resync): one fresh
		// snapshot says it in one frame, where events could fill queues.
		frames = []*wire.Frame{wire.PresenceFrame(r.room, r.page("", DefaultPage), nil)}
	} else {
		count := r.count()
		for _, e := range ev {
			e.Count = count // the count after the whole update
			frames = append(frames, wire.PresenceEventFrame(r.room, e))
		}
	}
	for w := range r.watchers {
		for _, f := range frames {
			if !w.Deliver(f) {
				go w.Overflowed() // closing unwatches, which needs Tracker.mu
				break
			}
		}
	}
}

func (r *roomView) checkReady() {
	if !r.isReady && len(r.waiting) == 0 {
		r.isReady = true
		close(r.ready)
	}
}

// page returns the counts and up to limit members after the cursor.
func (r *roomView) page(after string, limit int) wire.PresencePage {
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
	pg := wire.PresencePage{Count: r.count(), Conns: r.conns, Members: make([]wire.Member, 0, end-i)}
	for _, u := range r.sorted[i:end] {
		pg.Members = append(pg.Members, wire.Member{User: u, Conns: r.users[u]})
	}
	if end < len(r.sorted) {
		pg.Next = r.sorted[end-1]
	}
	return pg
}

// unref drops a reference, starting the view's linger when it was the
// last. Called with Tracker.mu.
func (r *roomView) unref() {
	if r.refs--; r.refs == 0 {
		r.idleSince = time.Now()
	}
}
