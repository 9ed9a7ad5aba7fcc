package fanout

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Publishers on this instance wait while its dispatcher is far behind.
//
// Everything the instance subscribes to reaches the dispatcher through one
// bounded inbox (inboxSize), and when it is full nats.go drops messages for
// the instance (a slow consumer). A publish returns as soon as NATS has the
// message, so a loop of sends can run ahead of the fan-out by any amount:
// measured, 100,000 sends to 10,000 users in a tight loop put 57,000
// messages in the inbox, and a run with a profiler attached lost 351. Admit
// makes such a loop go at the pace of the fan-out instead, as a hub's
// blocking publish does, while a publisher that is not ahead pays one
// channel length.
const (
	admitHigh    = inboxSize / 4 // a publisher waits while this many are waiting
	admitMaxWait = 5 * time.Second
	admitRecheck = 10 * time.Millisecond
)

// admission is the waiting publishers' side of the engine.
type admission struct {
	waiting atomic.Bool // someone waits on roomy: the dispatcher looks
	mu      sync.Mutex
	roomy   chan struct{} // closed when the inbox is below admitHigh
}

// Admit returns at once unless admitHigh or more messages wait for the
// dispatcher; then it waits until fewer do. It waits at most admitMaxWait,
// and at most half of what is left of ctx's deadline, then lets the publish
// go ahead: a dispatcher that does not move is not one publisher's to wait
// for, and NATS reports what it drops. It returns an error only when ctx is
// done before it starts waiting or canceled while it waits: then nothing
// was published.
//
// It must not be called on the dispatcher's goroutine, which would wait for
// itself.
func (e *Engine) Admit(ctx context.Context) error {
	if len(e.inbox) < admitHigh || !e.dispatching.Load() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wait := admitMaxWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	a := &e.admit
	a.mu.Lock()
	if a.roomy == nil {
		a.roomy = make(chan struct{})
	}
	roomy := a.roomy
	a.waiting.Store(true)
	a.mu.Unlock()
	// The dispatcher looks at waiting after each batch; one that drained the
	// inbox before it could see it is caught by the recheck.
	give := time.NewTimer(wait)
	defer give.Stop()
	recheck := time.NewTicker(admitRecheck)
	defer recheck.Stop()
	for len(e.inbox) >= admitHigh && e.dispatching.Load() {
		select {
		case <-roomy:
			return nil
		case <-give.C:
			return nil
		case <-recheck.C:
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return nil // past half of it already: go ahead
			}
			return ctx.Err()
		}
	}
	return nil
}

// admitted lets the waiting publishers go once the inbox is below
// admitHigh, or when the dispatcher ends. The dispatcher calls it after
// each batch: one atomic load when nobody waits.
func (e *Engine) admitted(ending bool) {
	a := &e.admit
	if !a.waiting.Load() || len(e.inbox) >= admitHigh && !ending {
		return
	}
	a.mu.Lock()
	if a.roomy != nil {
		close(a.roomy)
		a.roomy = nil
	}
	a.waiting.Store(false)
	a.mu.Unlock()
}
