package pubsub

import (
	"sync"
	"time"

	"github.com/roomcast/pubsub/internal/wire"
)

// refreshLead is how long before its session's expiry a connection is asked
// to refresh; a session shorter than twice that is asked halfway.
const refreshLead = 30 * time.Second

// lease is a connection's session expiry (ContextWithExpiry): the client is
// asked to refresh before it, and the connection ends at it with 4005
// unless a refresh (a POST through the host's middleware) extends it.
type lease struct {
	c     *Conn
	mu    sync.Mutex
	ends  time.Time // zero: no expiry
	due   time.Time // when the timer should fire: a fire before it is stale
	asked bool      // the refresh frame for this expiry was sent
	timer *time.Timer
	done  bool
}

// start counts down to ends, once the connection is registered.
func (l *lease) start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.timer = time.AfterFunc(time.Hour, l.tick)
	l.set(l.ends)
}

// set schedules the next step for ends; under l.mu.
func (l *lease) set(ends time.Time) {
	l.ends, l.asked = ends, false
	if l.timer == nil {
		return // not started yet
	}
	if ends.IsZero() {
		l.timer.Stop()
		return
	}
	left := time.Until(ends)
	wait := left - min(refreshLead, left/2)
	l.due = time.Now().Add(wait)
	l.timer.Reset(wait)
}

func (l *lease) tick() {
	l.mu.Lock()
	// A fire that raced an extension is stale: the timer is set again.
	if l.done || l.ends.IsZero() || time.Now().Before(l.due) {
		l.mu.Unlock()
		return
	}
	left := time.Until(l.ends)
	if left <= 0 {
		l.done = true
		l.mu.Unlock()
		l.c.closeWith(CloseSessionExpired, "session expired", ErrSessionExpired, true)
		return
	}
	ask := !l.asked && l.c.user != "" // an anonymous connection cannot refresh
	l.asked = true
	l.due = l.ends
	l.timer.Reset(left)
	ends := l.ends
	l.mu.Unlock()
	if ask {
		l.c.reply(wire.Refresh(ends.UnixMilli()))
	}
}

// extend moves the expiry to ends (zero: none). It reports false once the
// lease has ended the connection.
func (l *lease) extend(ends time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return false
	}
	l.set(ends)
	return true
}

// expires returns the current expiry, zero for none.
func (l *lease) expires() time.Time {
	if l == nil {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ends
}

// stop releases the timer, which would otherwise keep the connection.
func (l *lease) stop() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.done = true
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
}
