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
//
// The inbox alone does not show everything on its way: messages published
// but not yet read back from NATS wait in the NATS server's buffer for this
// connection, where nothing counts them (measured: one run in about a dozen
// of 100,000 sends still lost 278, with the inbox under admitHigh when each
// was admitted). So every admitFlushEvery admissions, the publisher that
// reaches the count also flushes the connection: the broker publishes on
// the connection the engine subscribes with, and NATS answers the flush
// behind everything it queued for it, so the flush returns once those
// messages are in the inbox. A loop of publishes can then be at most
// admitFlushEvery ahead of what the inbox counts; other publishers keep
// going during one's flush, and each is caught by a later one. (Stored
// publishes reach the inbox through the store's republish, which the flush
// does not wait for; their acknowledgement paces them.)
const (
	admitHigh       = inboxSize / 4 // a publisher waits while this many are waiting
	admitFlushEvery = 16384
	admitMaxWait    = 5 * time.Second
	admitRecheck    = 10 * time.Millisecond
)

// admission is the waiting publishers' side of the engine.
type admission struct {
	admitted atomic.Uint64 // publishes admitted, for admitFlushEvery
	waiting  atomic.Bool   // someone waits on roomy: the dispatcher looks
	mu       sync.Mutex
	roomy    chan struct{} // closed when the inbox is below admitHigh
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
	if !e.dispatching.Load() {
		return nil
	}
	flush := e.admit.admitted.Add(1)%admitFlushEvery == 0
	if !flush && len(e.inbox) < admitHigh {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wait := admitMaxWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	until := time.Now().Add(wait)        // the flush and the wait share it
	if flush && e.cfg.NC.IsConnected() { // reconnecting: NATS buffers the publishes, nothing to wait for
		fctx, cancel := context.WithDeadline(ctx, until)
		err := e.cfg.NC.FlushWithContext(fctx)
		cancel()
		if ctx.Err() == context.Canceled {
			return ctx.Err()
		}
		_ = err // a flush that fails or times out lets the publish go ahead, as the wait below does
		if len(e.inbox) < admitHigh {
			return nil
		}
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
	left := time.Until(until)
	if left <= 0 {
		return nil
	}
	give := time.NewTimer(left)
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
