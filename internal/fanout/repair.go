package fanout

import (
	"context"
	"strconv"
	"time"

	"github.com/roomcast/pubsub/internal/wire"
)

// repair delivers, from the store, the messages of t's room that the live
// stream skipped up to position upto: a republished message names its
// room's previous one, so a message lost between nodes (the stream's
// leader died after storing it, or NATS dropped it) is seen as a gap. It
// runs on the dispatcher, which waits: this happens only on failures. A
// replica that answers may not have the messages yet, so it reads again a
// few times before giving up.
func (e *Engine) repair(t *Topic, upto uint64, slow []Member) []Member {
	if e.cfg.Store == nil {
		return slow
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(t.repaired) > 4096 { // live copies that never came: forget them
		clear(t.repaired)
	}
	current := false // the store has what came after: the rest is gone
	for try := 0; t.lastSeq < upto && !current && try < 8; try++ {
		if try > 0 {
			time.Sleep(25 * time.Millisecond)
		}
		err := e.cfg.Store.ReadRoom(ctx, t.Name, t.lastSeq, func(seq uint64, env wire.Envelope) bool {
			if seq > upto {
				current = true
				return false
			}
			env.ID = strconv.FormatUint(seq, 10)
			f := e.frame(wire.KindRoom, t.Name, env)
			f.Stored, f.Prev = true, t.lastSeq
			slow = t.fanout([]*wire.Frame{f}, slow, e.cfg.Stats)
			t.lastSeq = seq
			if t.repaired == nil {
				t.repaired = make(map[uint64]struct{})
			}
			t.repaired[seq] = struct{}{}
			return seq < upto
		})
		if err != nil {
			e.cfg.Log.Warn("pubsub: reading skipped messages", "room", t.Name, "err", err)
			break
		}
	}
	if t.lastSeq < upto {
		e.cfg.Log.Warn("pubsub: live messages skipped and not found in the store", "room", t.Name, "after", t.lastSeq, "upto", upto)
		t.lastSeq = upto
	}
	e.cfg.Log.Info("pubsub: filled a gap in a room's live messages", "room", t.Name, "upto", upto)
	return slow
}

// Resubscribe drops t's NATS subscription, runs meanwhile (messages sent
// then never reach this instance, as during a route's reconnect), and
// subscribes again. It is a fault injection for tests of repair and resume.
func (e *Engine) Resubscribe(t *Topic, meanwhile func()) error {
	if err := t.sub.Unsubscribe(); err != nil {
		return err
	}
	if err := e.cfg.NC.Flush(); err != nil {
		return err
	}
	meanwhile()
	sub, err := e.cfg.NC.ChanSubscribe(t.Subject, e.inbox)
	if err != nil {
		return err
	}
	e.mu.Lock()
	t.sub = sub
	e.mu.Unlock()
	return e.cfg.NC.Flush()
}

// Lookup returns the topic of subject, nil if none.
func (e *Engine) Lookup(subject string) *Topic {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.topics[subject]
}
