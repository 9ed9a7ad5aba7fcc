package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/wire"
)

// Resume: a client that says "I have everything of these rooms up to store
// position P" gets what it missed, in order, then the live messages, with
// no gap and no duplicate across the switch:
//
//  1. The connection joins the rooms' topics in replay mode, in the same
//     critical section that queues "subscribed": from then on every live
//     frame of those rooms is kept in a buffer of this resume instead of
//     being queued.
//  2. The stored messages after P are read from the store (batched direct
//     gets, all the rooms of the resume in one scan, in store order) and
//     queued, paced by the writer so the queue stays bounded.
//  3. Under the connection's lock, the buffered frames past what was
//     replayed of their room are queued, in store order, and the rooms go
//     live. A live message is stored before it is republished, so it is
//     replayed, buffered, or both (then the buffered copy is dropped).
//
// A buffer that overflows (live traffic faster than the replay) is dropped
// and the replay goes on from the store, for a bounded number of rounds.
//
// Retention keeps a suffix of every room. Before the replay and after each
// batch, each room is checked for a gap: if its oldest retained message
// does not come right after what the client has, and a limit (the room's
// count or age, or the store's size) may have dropped messages, the client
// gets "truncated" for that room, and that room resumes from the present:
// never a silent gap. The check is conservative: it may say "truncated"
// when the dropped messages were all at or before the client's position.

// ErrInvalidID: a resume position is not a store position.
var ErrInvalidID = errors.New("pubsub: invalid message id")

const replayRounds = 8 // replays from the store after buffer overflows

// A replay that finds the store behind the live messages (a replica not yet
// current) reads again every behindWait, at most maxBehindTries times; a
// store still behind after that has dropped the missing messages (then the
// gap checks have said so).
const (
	behindWait     = 25 * time.Millisecond
	maxBehindTries = 40
)

// replayBuf keeps a room's live frames during a resume. Its identity tells
// a resume whether the room is still its own (not left, not rejoined).
type replayBuf struct {
	frames   []*wire.Frame
	bytes    int
	overflow bool
}

// parsePosition parses a client's resume position.
func parsePosition(id string) (uint64, error) {
	p, err := strconv.ParseUint(id, 10, 64)
	if err != nil || p == 0 || len(id) > 20 || id[0] == '+' {
		return 0, fmt.Errorf("%w %q: a resume position is the id of a message of a room with history", ErrInvalidID, truncate(id))
	}
	return p, nil
}

// enqueueFrom queues a frame fanned out from t, or keeps it while t is
// being replayed on this connection. A buffer holds at most half the queue:
// emptied into a queue the replay keeps under half full, it always fits.
func (c *Conn) enqueueFrom(t *topic, f *wire.Frame) bool {
	c.mu.Lock()
	if buf := c.replaying[t]; buf != nil {
		if !buf.overflow && len(buf.frames) < c.b.cfg.queueMessages/2 && buf.bytes+len(f.JSON) <= c.b.cfg.queueBytes/2 {
			buf.frames = append(buf.frames, f)
			buf.bytes += len(f.JSON)
		} else {
			buf.overflow, buf.frames, buf.bytes = true, nil, 0
		}
		c.mu.Unlock()
		return true
	}
	ok, start := c.enqueueLocked(f)
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	return ok
}

// resumeRoom is one room of a resume.
type resumeRoom struct {
	t    *topic
	name string
	buf  *replayBuf
	last uint64 // the client has the room up to here

	leaderLast uint64 // the room's last position on the stream's leader (replicated history)
}

// startResume resumes rooms (already joined in replay mode) from after, in
// a goroutine of the connection.
func (c *Conn) startResume(rooms map[*topic]string, after uint64, ref []byte) {
	if len(rooms) == 0 {
		return
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	bySubj := make(map[string]*resumeRoom, len(rooms))
	for t, name := range rooms {
		if buf := c.replaying[t]; buf != nil {
			bySubj[c.b.subjects.Hist(name)] = &resumeRoom{t: t, name: name, buf: buf, last: after}
		}
	}
	c.bg.Add(1)
	c.mu.Unlock()
	go c.resume(bySubj, after, ref)
}

// mine reports whether r is still this resume's (under c.mu).
func (c *Conn) mine(r *resumeRoom) bool { return c.replaying[r.t] == r.buf }

func (c *Conn) resume(rooms map[string]*resumeRoom, after uint64, ref []byte) {
	defer c.bg.Done()
	ctx := c.ctx
	checkGaps := func() error {
		for _, r := range rooms {
			gap, head, err := c.b.gapAfter(ctx, r.name, r.last)
			if err != nil {
				return err
			}
			if gap {
				// Resume this room from the present; it stays in the scan,
				// so over SSE the stream's ids never go backwards.
				c.reply(wire.Reply("truncated", r.name, "", ref))
				r.last = max(r.last, head)
			}
		}
		return nil
	}
	// One room: read its own subject. Several (SSE): the whole history in
	// store order, keeping theirs, so a resume cut short anywhere leaves a
	// correct Last-Event-ID.
	filter := c.b.subjects.HistWildcard()
	if len(rooms) == 1 {
		for subj := range rooms {
			filter = subj
		}
	}
	scan := after
	err := checkGaps()
	behindTries := 0
	for round := 0; err == nil; {
		var n int
		n, err = c.b.readStoredRaw(ctx, filter, scan, storedBatch, func(subj string, m Message) bool {
			seq, _ := strconv.ParseUint(m.ID, 10, 64)
			scan = seq
			r := rooms[subj]
			if r == nil || seq <= r.last {
				return true
			}
			c.mu.Lock()
			mine := c.mine(r)
			c.mu.Unlock()
			if !mine {
				return true // left or rejoined meanwhile
			}
			f := wire.MessageFrame(wire.KindRoom, r.name, wire.Envelope{ID: m.ID, From: m.From, Data: m.Data})
			f.Stored = true
			if c.enqueueReplay(f) != nil {
				return false
			}
			r.last = seq
			return true
		})
		if err != nil || c.Err() != nil {
			break
		}
		if n == storedBatch { // more to read: were messages dropped meanwhile?
			err = checkGaps()
			continue
		}
		anyway := behindTries >= maxBehindTries
		if !anyway && c.b.cfg.historyReplicas > 1 {
			// The replica that answered may not have applied what its
			// leader has acknowledged: the leader tells where each room ends.
			for _, r := range rooms {
				if r.leaderLast, err = c.b.leaderLast(ctx, c.b.subjects.Hist(r.name)); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done, behind := c.finishReplay(rooms, anyway)
		if done {
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
			c.closeSlow() // the rooms move faster than this client can catch up
			return
		}
	}
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
		c.b.log.Error("pubsub: resume", "err", err)
		c.closeWith(CloseInternalError, "resume failed", err, false)
	}
}

// finishReplay makes the rooms live, queueing their buffered frames past
// what was replayed of each, in store order. It does not (done is false)
// when a buffer overflowed, or, unless anyway, when the first buffered frame
// past the replay names a previous message of its room that the replay has
// not read (behind): then the replay goes on.
func (c *Conn) finishReplay(rooms map[string]*resumeRoom, anyway bool) (done, behind bool) {
	c.mu.Lock()
	for _, r := range rooms {
		if c.mine(r) && r.buf.overflow {
			r.buf.overflow = false
			c.mu.Unlock()
			return false, false
		}
	}
	var frames []*wire.Frame
	for _, r := range rooms {
		if !c.mine(r) {
			continue
		}
		first := true
		for _, f := range r.buf.frames {
			if seq, _ := strconv.ParseUint(f.ID, 10, 64); seq > r.last {
				if first && f.Prev > r.last && !anyway {
					c.mu.Unlock()
					return false, true
				}
				first = false
				frames = append(frames, f)
			}
		}
		if first && r.leaderLast > r.last && !anyway {
			c.mu.Unlock()
			return false, true // stored, but not yet on the replica that answered
		}
	}
	for _, r := range rooms {
		if c.mine(r) {
			delete(c.replaying, r.t)
		}
	}
	slices.SortFunc(frames, func(a, b *wire.Frame) int { return compareIDs(a.ID, b.ID) })
	ok, start := true, false
	for _, f := range frames {
		var s bool
		if ok, s = c.enqueueLocked(f); !ok {
			break
		}
		start = start || s
	}
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	if !ok {
		c.closeSlow()
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

// enqueueReplay queues a replayed frame, waiting while the queue is half
// full: a replay of any length holds a bounded queue.
func (c *Conn) enqueueReplay(f *wire.Frame) error {
	deadline := time.Now().Add(c.b.cfg.writeTimeout)
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return ErrClosed
		}
		if len(c.queue) == 0 || len(c.queue) < c.b.cfg.queueMessages/2 && c.queueBytes+len(f.JSON) <= c.b.cfg.queueBytes/2 {
			_, start := c.enqueueLocked(f)
			c.mu.Unlock()
			if start {
				go c.writeLoop()
			}
			return nil
		}
		if c.drained == nil {
			c.drained = make(chan struct{}, 1)
		}
		drained := c.drained
		c.mu.Unlock()
		select {
		case <-drained: // the writer took a batch, or the connection is closing
		case <-time.After(time.Until(deadline)):
			c.closeSlow()
			return ErrSlowConsumer
		}
		deadline = time.Now().Add(c.b.cfg.writeTimeout)
	}
}

// gapAfter reports whether messages of room after position after may have
// been dropped from the store, and the store's last position. The common
// answers come from direct gets; stream info only for the rare rest.
func (b *Broker) gapAfter(ctx context.Context, room string, after uint64) (gap bool, head uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a reconnect storm queues these
	defer cancel()
	h, _ := b.historyFor(room)
	subj := b.subjects.Hist(room)
	last, err := b.hist.stream.GetLastMsgForSubject(ctx, b.subjects.HistWildcard())
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return after > 0, 0, nil // an empty store: a position means it was reset
	case err != nil:
		return false, 0, err
	}
	head = last.Sequence
	if after > head {
		// The store was reset and positions restarted, or the replica that
		// answered is behind: the stream's leader knows which.
		info, err := b.hist.stream.Info(ctx)
		if err != nil {
			return false, head, err
		}
		if head = info.State.LastSeq; after > head {
			return true, head, nil
		}
	}
	next, err := b.hist.stream.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(subj))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, head, err
	}
	if err == nil && next.Sequence == after+1 {
		return false, head, nil // what the client has is followed by what is kept
	}
	oldest, err := b.hist.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, head, err
	}
	if err == nil && oldest.Sequence <= after {
		return false, head, nil // the room's kept suffix starts at or before the position
	}
	// Nothing of the room is kept at or before the position: messages after
	// it may have been dropped, if a limit can have dropped any.
	info, err := b.hist.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return false, head, err
	}
	switch {
	case info.State.FirstSeq > after+1 && info.State.Bytes >= uint64(info.Config.MaxBytes)*9/10:
		return true, head, nil // the store is full: it drops its oldest, of any room
	case h.Messages > 0 && info.State.Subjects[subj] >= uint64(h.Messages):
		return true, head, nil // the room has reached its count
	case h.MaxAge > 0 && !b.youngerThan(ctx, after, h.MaxAge):
		return true, head, nil
	}
	return false, head, nil
}

// youngerThan reports whether the message at position seq is known to be
// younger than age: then no message after it can have expired.
func (b *Broker) youngerThan(ctx context.Context, seq uint64, age time.Duration) bool {
	m, err := b.hist.stream.GetMsg(ctx, seq)
	return err == nil && time.Since(m.Time) < age
}

// leaderLast returns the position of subj's last stored message as the
// history stream's leader has it (0 for none). Unlike a direct get, which
// any replica may answer, this is never behind what was acknowledged.
func (b *Broker) leaderLast(ctx context.Context, subj string) (uint64, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": subj})
	var m *nats.Msg
	var err error
	// While the stream elects a new leader requests go unanswered: short
	// tries, for up to 15 s.
	for try := 0; try < 15; try++ {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err = b.nc.RequestWithContext(rctx, b.hist.api+"STREAM.MSG.GET."+b.hist.name, req)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("pubsub: reading history: %w", err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return 0, fmt.Errorf("pubsub: reading history: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return 0, nil
	case resp.Error != nil:
		return 0, fmt.Errorf("pubsub: reading history: %s", resp.Error.Description)
	case resp.Message == nil:
		return 0, nil
	}
	return resp.Message.Seq, nil
}
