package pubsub

// A connection's membership of fan-out topics: its rooms and its user.

import (
	"fmt"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/wire"
)

// joinRoom adds the connection to room's topic and queues ack in the same
// critical section, so the client sees the ack before any message of the
// room. With hold, the room's live frames wait in the gate for a resume,
// which the caller must start when added is true.
func (c *Conn) joinRoom(room string, ack *wire.Frame, hold bool) (t *fanout.Topic, added bool, err error) {
	c.mu.Lock()
	_, in := c.rooms[room]
	full := len(c.rooms) >= c.b.cfg.maxRooms
	closing := c.closing
	c.mu.Unlock()
	switch {
	case closing:
		return nil, false, ErrClosed
	case in:
		// Under the lock, as a leave queues its ack: a leave between the
		// check and the ack would otherwise be told after it.
		c.mu.Lock()
		if c.rooms[room] != nil {
			ok := c.out.Enqueue(ack)
			c.mu.Unlock()
			if !ok {
				c.closeSlow()
			}
			return nil, false, nil
		}
		c.mu.Unlock()
	}
	switch {
	case full:
		return nil, false, ErrTooManyRooms
	}
	if t, err = c.acquire(wire.KindRoom, room, c.b.roomSubject(room)); err != nil {
		return nil, false, err
	}
	ok := true
	t.Join(member{c}, func(already bool) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case c.closing:
			err = ErrClosed
			return false
		case c.rooms[room] != nil: // joined concurrently
		case len(c.rooms) >= c.b.cfg.maxRooms:
			err = ErrTooManyRooms
			return false
		default:
			c.rooms[room] = t
			// Under the connection's lock, as leaving is: a join is always
			// recorded before the leave that follows it.
			c.b.pres.Joined(room, c.user)
			if hold {
				c.gate.Hold(t)
			}
			added = !already
		}
		ok = c.out.Enqueue(ack)
		return added
	})
	if !added {
		c.b.fan.Release(t)
	}
	if !ok {
		c.closeSlow()
	}
	return t, added, err
}

// leaveRoom takes the connection out of room and queues ack: always (the
// answer to a client's request), or, with ackIfLeft, only if it was in the
// room and in the same critical section as the leave, so that a client's
// subscribe racing it is answered after it. The topic and the connection
// forget each other in one critical section, so a leave and a rejoin of
// the same room never leave one without the other.
func (c *Conn) leaveRoom(room string, ack *wire.Frame, ackIfLeft bool) (left bool) {
	c.mu.Lock()
	t := c.rooms[room]
	c.mu.Unlock()
	overflow := false
	if t != nil {
		t.Leave(member{c}, func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.rooms[room] != t {
				return false // left or closed meanwhile
			}
			delete(c.rooms, room)
			left = true
			overflow = ackIfLeft && !c.out.Enqueue(ack)
			return true
		})
		if left {
			c.gate.Drop(t)
			c.b.pres.Left(room, c.user)
			c.b.fan.Release(t)
		}
	}
	if overflow {
		c.closeSlow()
	}
	c.b.pres.Unwatch(watcher{c}, room)
	if ack != nil && !ackIfLeft {
		c.reply(ack)
	}
	return left
}

// joinUser subscribes the connection to its user's messages.
// The welcome frame is queued in the same critical section as the join,
// so it comes before any of the user's messages, and a client that has it
// gets every message sent to its user from then on.
func (c *Conn) joinUser(welcome *wire.Frame) error {
	t, err := c.acquire(wire.KindUser, c.user, c.b.subjects.User(c.user))
	if err != nil {
		return err
	}
	added := false
	t.Join(member{c}, func(already bool) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closing {
			err = ErrClosed
			return false
		}
		c.userTopic, added = t, !already
		c.out.Enqueue(welcome) // the first frame: the queue cannot be full
		return added
	})
	if !added {
		c.b.fan.Release(t)
	}
	return err
}

// acquire is fanout's Acquire in the broker's errors.
func (c *Conn) acquire(kind int, name, subj string) (*fanout.Topic, error) {
	t, err := c.b.fan.Acquire(kind, name, subj)
	if err == fanout.ErrClosed {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, fmt.Errorf("pubsub: %w", err)
	}
	return t, nil
}

// removeFrom takes a closing connection out of t.
func (c *Conn) removeFrom(t *fanout.Topic) {
	t.Leave(member{c}, func() bool { return true })
	c.b.fan.Release(t)
}

// member is a connection as the fan-out engine sees it; watcher, as
// presence does.
type (
	member  struct{ c *Conn }
	watcher struct{ c *Conn }
)

func (m member) Deliver(t *fanout.Topic, f *wire.Frame) bool { return m.c.gate.Deliver(t, f) }
func (m member) Overflowed()                                 { m.c.closeSlow() }
func (w watcher) Deliver(f *wire.Frame) bool                 { return w.c.out.Enqueue(f) }
func (w watcher) Overflowed()                                { w.c.closeSlow() }
