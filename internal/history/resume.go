package history

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/wire"
)

// Resume: a client that says "I have everything of these rooms up to store
// position P" gets what it missed, in order, then the live messages, with
// no gap and no duplicate across the switch:
//
//  1. The connection joins the rooms' topics with the rooms held (Gate.Hold,
//     in the same critical section that queues "subscribed"): from then on
//     every live frame of those rooms is kept in the gate instead of being
//     queued.
//  2. The stored messages after P are read from the store (batched direct
//     gets, all the rooms of the resume in one scan, in store order) and
//     queued, paced by the writer so the queue stays bounded.
//  3. Under the gate's lock, the held frames past what was replayed of their
//     room are queued, in store order, and the rooms go live. A live message
//     is stored before it is republished, so it is replayed, held, or both
//     (then the held copy is dropped).
//  4. The store can be ahead of the live stream: the replay may have read
//     messages whose live copies are still on their way to this instance
//     (queued in NATS or in the dispatcher, or about to be repaired). So a
//     room that goes live keeps a floor, the last position it delivered:
//     live copies at or below it are dropped, and the first one above it
//     removes the floor (a topic's live messages come in store order). No
//     id reaches a connection twice.
//
// A hold that overflows (live traffic faster than the replay) is dropped and
// the replay goes on from the store, for a bounded number of rounds.
//
// Before the replay and after each batch, each room is checked for a gap
// (Store.GapAfter): the client gets "truncated" for a room whose missed
// messages are no longer all kept, and that room resumes from the present.

const replayRounds = 8 // replays from the store after holds overflowed

// A replay that finds the store behind the live messages (a replica not yet
// current) reads again every behindWait, at most maxBehindTries times; a
// store still behind after that has dropped the missing messages (then the
// gap checks have said so).
const (
	behindWait     = 25 * time.Millisecond
	maxBehindTries = 40
)

// Gate is one connection's resume state: the live frames of the rooms it is
// resuming wait here until their replay catches up. Every frame fanned out
// to the connection passes through Deliver.
type Gate struct {
	q       *fanout.Queue
	holding atomic.Int32 // rooms held or floored: none is the common case, and lock-free

	mu     sync.Mutex
	rooms  map[*fanout.Topic]*hold
	floors map[*fanout.Topic]floor // rooms gone live: their last delivered position
}

// floor is a room's last position delivered by its resume. Live copies at
// or below it are dropped until one above it comes, or until floorFor has
// passed (after a store reset, positions start again lower).
type floor struct {
	seq   uint64
	until time.Time
}

// floorFor bounds how long a floor stays: long enough for the live stream
// to catch up with the store (queued messages, a repair), short enough
// that a reset store's new messages are not dropped for long.
const floorFor = 10 * time.Second

// hold keeps a room's live frames during a resume. Its identity tells a
// resume whether the room is still its own (not left, not rejoined).
type hold struct {
	frames   []*wire.Frame
	bytes    int
	overflow bool
}

// NewGate returns the gate in front of q.
func NewGate(q *fanout.Queue) *Gate { return &Gate{q: q} }

// Init puts g, a field of its connection, in front of q.
func (g *Gate) Init(q *fanout.Queue) { g.q = q }

// Deliver queues f, fanned out from t, or holds it while t is being
// resumed. A hold keeps at most half the queue: emptied into a queue the
// replay keeps under half full, it always fits.
func (g *Gate) Deliver(t *fanout.Topic, f *wire.Frame) bool {
	if g.holding.Load() == 0 {
		// Holding starts before the topic delivers to this connection,
		// and ends after the held frames are queued: a frame that sees
		// none held comes after them.
		return g.q.Enqueue(f)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if fl, ok := g.floors[t]; ok && f.Stored {
		if seq, _ := strconv.ParseUint(f.ID, 10, 64); seq <= fl.seq && time.Now().Before(fl.until) {
			return true // replayed already
		}
		delete(g.floors, t) // the live stream is past the replay
		g.holding.Add(-1)
	}
	if h := g.rooms[t]; h != nil {
		maxFrames, maxBytes := g.q.Bounds()
		if !h.overflow && len(h.frames) < maxFrames/2 && h.bytes+len(f.JSON) <= maxBytes/2 {
			h.frames = append(h.frames, f)
			h.bytes += len(f.JSON)
		} else {
			h.overflow, h.frames, h.bytes = true, nil, 0
		}
		return true
	}
	return g.q.Enqueue(f)
}

// Hold starts holding t's live frames, replacing any earlier hold of it.
// Call it before t delivers to the connection (in Topic.Join's admit).
func (g *Gate) Hold(t *fanout.Topic) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rooms == nil {
		g.rooms = make(map[*fanout.Topic]*hold)
	}
	if g.rooms[t] == nil {
		g.holding.Add(1)
	}
	g.rooms[t] = &hold{}
	g.dropFloor(t)
}

// dropFloor forgets t's floor. Call with g.mu held.
func (g *Gate) dropFloor(t *fanout.Topic) {
	if _, ok := g.floors[t]; ok {
		delete(g.floors, t)
		g.holding.Add(-1)
	}
}

// Drop forgets t's hold: the connection left the room.
func (g *Gate) Drop(t *fanout.Topic) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rooms[t] != nil {
		delete(g.rooms, t)
		g.holding.Add(-1)
	}
	g.dropFloor(t)
}

// Owner is what a resume needs of its connection.
type Owner interface {
	// Slow closes the connection as a slow consumer: it cannot keep up.
	Slow()
	// Failed closes the connection: the store failed.
	Failed(err error)
}

// room is one room of a resume.
type room struct {
	t    *fanout.Topic
	name string
	h    *hold
	last uint64 // the client has the room up to here

	leaderLast uint64 // the room's last position on the stream's leader (replicated history)
	delivered  uint64 // the last held frame queued when the room went live
}

func (g *Gate) mine(r *room) bool { return g.rooms[r.t] == r.h }

// Resume replays rooms (held since they were joined) from position after
// and makes them live. It returns when done, or when the connection or ctx
// ends; pace bounds each wait for the writer.
func (g *Gate) Resume(ctx context.Context, s *Store, rooms map[*fanout.Topic]string, after uint64, ref json.RawMessage, pace time.Duration, o Owner) {
	bySubj := make(map[string]*room, len(rooms))
	g.mu.Lock()
	for t, name := range rooms {
		if h := g.rooms[t]; h != nil {
			bySubj[s.cfg.Subjects.Hist(name)] = &room{t: t, name: name, h: h, last: after}
		}
	}
	g.mu.Unlock()
	if len(bySubj) == 0 {
		return
	}
	start, replayed := time.Now(), 0
	// A reconnect storm resumes a few at a time: each replay holds up to
	// a batch of messages in memory, and the rest wait (their rooms held).
	select {
	case s.resumes <- struct{}{}:
		defer func() { <-s.resumes }()
	case <-ctx.Done():
		return
	}
	checkGaps := func() error {
		for _, r := range bySubj {
			gap, head, err := s.GapAfter(ctx, r.name, r.last)
			if err != nil {
				return err
			}
			if gap {
				// Resume this room from the present; it stays in the scan,
				// so over SSE the stream's ids never go backwards.
				s.cfg.Stats.TruncatedRoom()
				if !g.q.Enqueue(wire.Reply("truncated", r.name, "", ref)) {
					o.Slow()
				}
				// From the present: also when the position is past the
				// store's end (the store was reset), or the floor would
				// drop the new numbering's messages.
				r.last = head
			}
		}
		return nil
	}
	// One room: read its own subject. Several (SSE): the whole history in
	// store order, keeping theirs, so a resume cut short anywhere leaves a
	// correct Last-Event-ID.
	filter := s.cfg.Subjects.HistWildcard()
	if len(bySubj) == 1 {
		for subj := range bySubj {
			filter = subj
		}
	}
	scan := after
	stalled := false
	replay := func(m Message) bool {
		scan = m.Seq
		r := bySubj[m.Subject]
		if r == nil || m.Seq <= r.last {
			return true
		}
		g.mu.Lock()
		mine := g.mine(r)
		g.mu.Unlock()
		if !mine {
			return true // left or rejoined meanwhile
		}
		f := wire.MessageFrame(wire.KindRoom, r.name, wire.Envelope{ID: strconv.FormatUint(m.Seq, 10), From: m.From, Data: m.Data})
		f.Stored = true
		if err := g.q.EnqueuePaced(f, pace); err != nil {
			stalled = errors.Is(err, fanout.ErrStalled)
			return false
		}
		r.last = m.Seq
		replayed++
		return true
	}
	// A store error that says "not now" (no leader, no answer in time) is
	// retried for a while: a reconnect storm must not be fed by resumes
	// that give up at the first hiccup.
	retry := func(op func() error) error { return s.retryTransient(ctx, op) }
	err := retry(checkGaps)
	behindTries := 0
	for round := 0; err == nil; {
		var n int
		err = retry(func() (err error) {
			n, err = s.Read(ctx, filter, scan, batchSize, replay)
			return err
		})
		if stalled {
			o.Slow()
			return
		}
		if err != nil || g.q.Closing() {
			break
		}
		if n == batchSize { // more to read: were messages dropped meanwhile?
			err = retry(checkGaps)
			continue
		}
		anyway := behindTries >= maxBehindTries
		if !anyway && s.Replicated() {
			// The replica that answered may not have applied what its
			// leader has acknowledged: the leader tells where each room ends.
			for _, r := range bySubj {
				err = retry(func() (err error) { r.leaderLast, err = s.LeaderLast(ctx, r.name); return err })
				if err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done, behind := g.finish(bySubj, anyway, o)
		if done {
			s.cfg.Stats.Resumed(time.Since(start), replayed)
			return
		}
		if behind {
			// The store copy that answered has not caught up with what was
			// published live yet (a replica): read again shortly.
			behindTries++
			select {
			case <-time.After(behindWait):
			case <-ctx.Done():
			}
			continue
		}
		if round++; round > replayRounds {
			o.Slow() // the rooms move faster than this client can catch up
			return
		}
	}
	if err != nil && ctx.Err() == nil && !g.q.Closing() {
		o.Failed(err)
	}
}

// finish makes the rooms live, queueing their held frames past what was
// replayed of each, in store order. It does not (done is false) when a hold
// overflowed, or, unless anyway, when the first held frame past the replay
// names a previous message of its room that the replay has not read
// (behind): then the replay goes on.
func (g *Gate) finish(rooms map[string]*room, anyway bool, o Owner) (done, behind bool) {
	g.mu.Lock()
	for _, r := range rooms {
		if g.mine(r) && r.h.overflow {
			r.h.overflow = false
			g.mu.Unlock()
			return false, false
		}
	}
	var frames []*wire.Frame
	for _, r := range rooms {
		if !g.mine(r) {
			continue
		}
		first := true
		for _, f := range r.h.frames {
			if !f.Stored { // a notice, not a message: it has no position
				frames = append(frames, f)
				continue
			}
			if seq, _ := strconv.ParseUint(f.ID, 10, 64); seq > r.last {
				if first && f.Prev > r.last && !anyway {
					g.mu.Unlock()
					return false, true
				}
				first = false
				frames = append(frames, f)
				r.delivered = max(r.delivered, seq)
			}
		}
		if first && r.leaderLast > r.last && !anyway {
			g.mu.Unlock()
			return false, true // stored, but not yet on the replica that answered
		}
	}
	slices.SortFunc(frames, func(a, b *wire.Frame) int { return compareIDs(a.ID, b.ID) })
	ok := g.q.EnqueueAll(frames)
	// Only now: a live frame that finds nothing held comes after these.
	// It is dropped if the replay or the hold delivered it already.
	for _, r := range rooms {
		if g.mine(r) {
			delete(g.rooms, r.t)
			if g.floors == nil {
				g.floors = make(map[*fanout.Topic]floor)
			}
			// The room's count in holding carries over to its floor.
			g.floors[r.t] = floor{seq: max(r.last, r.delivered), until: time.Now().Add(floorFor)}
		}
	}
	g.mu.Unlock()
	if !ok {
		o.Slow()
	}
	return true, false
}

func compareIDs(a, b string) int {
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}
