package pubsub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/wire"
)

// Resume: a client that says "I have everything of these rooms up to store
// position P" gets what it missed, in order, then the live messages, with
// no gap and no duplicate across the switch:
//
//  1. The connection joins the rooms' topics in replay mode, in the same
//     critical section that queues "subscribed": from then on every live
//     frame of those rooms is kept in a buffer instead of being queued.
//  2. The stored messages after P are read from the store (batched direct
//     gets) and queued, paced by the writer so the queue stays bounded.
//  3. Under the connection's lock, the buffered live frames with a position
//     past the last replayed one are queued and the rooms go live. A live
//     message is stored before it is republished, so it is either replayed
//     or buffered (or both: then dropped as a duplicate by its position).
//
// A buffer that overflows (live traffic faster than the replay) is dropped
// and the replay goes on from the store, for a bounded number of rounds.
//
// Before replaying, each room is checked for a gap: retention keeps a suffix
// of every room, so if the room's oldest retained message comes right after
// P, nothing is missing; otherwise messages after P may have been dropped by
// the room's count or age limit, and the client gets "truncated" for that
// room instead of a replay: never a silent gap. The check is conservative:
// it may say "truncated" when the dropped messages were all at or before P.

// ErrInvalidID: a resume position is not a store position.
var ErrInvalidID = errors.New("pubsub: invalid message id")

const (
	replayBufferFrames = 4096 // live frames kept per room while replaying
	replayRounds       = 8    // replays from the store after buffer overflows
)

type replayBuf struct {
	frames   []*wire.Frame
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
// being replayed on this connection.
func (c *Conn) enqueueFrom(t *topic, f *wire.Frame) bool {
	c.mu.Lock()
	if buf := c.replaying[t]; buf != nil {
		if len(buf.frames) < replayBufferFrames {
			buf.frames = append(buf.frames, f)
		} else {
			buf.overflow, buf.frames = true, nil
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

// resume replays rooms (topic -> room name) from after, then makes them
// live. It runs in a goroutine of its own, counted in c.bg; the topics are
// already in c.replaying.
func (c *Conn) resume(rooms map[*topic]string, after uint64, ref []byte) {
	defer c.bg.Done()
	ctx := c.ctx
	replay := map[string]string{} // stored subject -> room
	for t, room := range rooms {
		gap, err := c.b.gapAfter(ctx, room, after)
		if err != nil {
			c.b.log.Error("pubsub: resume", "room", room, "err", err)
			gap = true // cannot tell: say so rather than risk a silent gap
		}
		if gap {
			c.reply(wire.Reply("truncated", room, "", ref))
			c.goLive(t, 0, nil)
			continue
		}
		replay[c.b.subjects.Hist(room)] = room
	}
	if len(replay) == 0 {
		return
	}
	// One room: read its own subject. Several (SSE): the whole history in
	// store order, keeping theirs, so a resume cut short anywhere leaves a
	// correct Last-Event-ID.
	filter := c.b.subjects.HistWildcard()
	if len(replay) == 1 {
		for subj := range replay {
			filter = subj
		}
	}
	last := after
	for round := 0; ; round++ {
		err := c.b.readStoredRaw(ctx, filter, last, func(subj string, m Message) bool {
			room, ok := replay[subj]
			if !ok {
				return true
			}
			seq, _ := strconv.ParseUint(m.ID, 10, 64)
			f := wire.MessageFrame(wire.KindRoom, room, wire.Envelope{ID: m.ID, From: m.From, Data: m.Data})
			f.Stored = true
			if err := c.enqueueReplay(f); err != nil {
				return false
			}
			last = seq
			return true
		})
		if err != nil {
			if !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
				c.b.log.Error("pubsub: resume", "err", err)
				c.closeWith(CloseInternalError, "resume failed", err, false)
			}
			return
		}
		if c.finishReplay(rooms, replay, last) {
			return
		}
		if round == replayRounds {
			c.closeSlow() // the rooms move faster than this client can catch up
			return
		}
	}
}

// finishReplay makes the rooms live, queueing their buffered frames past
// last in store order, unless a buffer overflowed: then it reports false
// and the replay goes on.
func (c *Conn) finishReplay(rooms map[*topic]string, replay map[string]string, last uint64) bool {
	c.mu.Lock()
	var frames []*wire.Frame
	for t, room := range rooms {
		if _, replayed := replay[c.b.subjects.Hist(room)]; !replayed {
			continue
		}
		buf := c.replaying[t]
		if buf == nil {
			continue // left the room meanwhile
		}
		if buf.overflow {
			buf.overflow, buf.frames = false, nil
			c.mu.Unlock()
			return false
		}
		frames = append(frames, buf.frames...)
	}
	for t, room := range rooms {
		if _, replayed := replay[c.b.subjects.Hist(room)]; replayed {
			delete(c.replaying, t)
		}
	}
	slices.SortFunc(frames, func(a, b *wire.Frame) int { return compareIDs(a.ID, b.ID) })
	ok, start := true, false
	for _, f := range frames {
		if seq, _ := strconv.ParseUint(f.ID, 10, 64); seq > last && ok {
			var s bool
			ok, s = c.enqueueLocked(f)
			start = start || s
			last = seq
		}
	}
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	if !ok {
		c.closeSlow()
	}
	return true
}

// goLive ends replay mode for t, queueing what was buffered.
func (c *Conn) goLive(t *topic, _ uint64, _ []byte) {
	c.mu.Lock()
	buf := c.replaying[t]
	delete(c.replaying, t)
	ok, start := true, false
	if buf != nil && !buf.overflow {
		for _, f := range buf.frames {
			var s bool
			if ok, s = c.enqueueLocked(f); !ok {
				break
			}
			start = start || s
		}
	}
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	if !ok {
		c.closeSlow()
	}
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
		if len(c.queue) < c.b.cfg.queueMessages/2 && c.queueBytes+len(f.JSON) <= c.b.cfg.queueBytes/2 {
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
		case <-drained:
		case <-c.ctx.Done():
			return ErrClosed
		case <-time.After(time.Until(deadline)):
			c.closeSlow()
			return ErrSlowConsumer
		}
		deadline = time.Now().Add(c.b.cfg.writeTimeout)
	}
}

// gapAfter reports whether messages of room after position after may have
// been dropped from the store (see the comment at the top of this file).
func (b *Broker) gapAfter(ctx context.Context, room string, after uint64) (bool, error) {
	h, _ := b.historyFor(room)
	subj := b.subjects.Hist(room)
	info, err := b.hist.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return false, err
	}
	if after > info.State.LastSeq {
		return true, nil // the store was reset: positions restarted
	}
	first, err := b.hist.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// Nothing retained: dropped by age, if anything.
		return h.MaxAge > 0 && !b.youngerThan(ctx, after, h.MaxAge), nil
	case err != nil:
		return false, err
	case first.Sequence <= after+1:
		return false, nil // everything after the position is retained
	}
	// The oldest retained message is past the position: were messages in
	// between dropped? By count only if the room has been full.
	if h.Messages > 0 && info.State.Subjects[subj] >= uint64(h.Messages) {
		return true, nil
	}
	return h.MaxAge > 0 && !b.youngerThan(ctx, after, h.MaxAge), nil
}

// youngerThan reports whether the message at position seq is known to be
// younger than age: then no message after it can have expired.
func (b *Broker) youngerThan(ctx context.Context, seq uint64, age time.Duration) bool {
	m, err := b.hist.stream.GetMsg(ctx, seq)
	return err == nil && time.Since(m.Time) < age
}
