package pubsub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/roomcast/pubsub/internal/history"
)

// ErrNotReady is what Ready wraps when the broker cannot serve now: its
// NATS connection is down, or the history store does not answer. The
// wrapped error says which. A broker that is shutting down returns
// ErrClosed instead.
var ErrNotReady = errors.New("pubsub: not ready")

// readyCacheFor is how long a Ready answer is reused: probes from a load
// balancer and a kubelet every second must not each cost a JetStream round
// trip.
const readyCacheFor = time.Second

// readiness caches Ready's answer and remembers the last state, so that a
// change is logged once.
type readiness struct {
	mu    sync.Mutex
	at    time.Time
	err   error
	known bool // a state was logged
}

// Ready reports whether this instance can serve live connections now: nil
// when its NATS connection is up and, with history, JetStream answers for
// the history stream within two seconds; an error wrapping ErrNotReady
// naming the cause otherwise, or ErrClosed once Shutdown has begun. One
// check runs at a time and its answer is reused for a second, so probes
// cost at most one JetStream round trip a second. A change of state is
// logged once (Warn when it becomes not ready, Info when it recovers).
func (b *Broker) Ready(ctx context.Context) error {
	if b.isClosing() {
		return ErrClosed
	}
	r := &b.ready
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && time.Since(r.at) < readyCacheFor {
		return r.err
	}
	// The check runs to its own bound whatever the caller's deadline (a
	// kubelet gives one second): its answer is the broker's state, cached
	// and logged, and the next probe reuses it.
	err := b.checkReady(context.WithoutCancel(ctx))
	switch {
	case err != nil && (r.err == nil || !r.known):
		b.log.Warn("pubsub: not ready", "err", err)
	case err == nil && r.err != nil:
		b.log.Info("pubsub: ready again")
	}
	r.at, r.err, r.known = time.Now(), err, true
	return err
}

func (b *Broker) checkReady(ctx context.Context) error {
	if st := b.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: NATS connection is %s", ErrNotReady, st)
	}
	if b.hist != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := b.hist.Ping(ctx); err != nil { // a store known to fail is tried again here
			if errors.Is(err, history.ErrStoreFailed) {
				return fmt.Errorf("%w: %w (%v)", ErrNotReady, ErrStoreFailed, err)
			}
			return fmt.Errorf("%w: history store (JetStream) does not answer: %v", ErrNotReady, err)
		}
	}
	if b.hist != nil && b.srv != nil && len(b.cfg.embedded.LeafRemotes) == 0 {
		// The embedded node keeps history: it must be current with its
		// cluster (a node cut off from the majority still answers locally).
		if err := b.srv.Healthy(); err != nil {
			return fmt.Errorf("%w: %v", ErrNotReady, err)
		}
	}
	return nil
}

// ReadyHandler answers health probes (a Kubernetes readinessProbe, a load
// balancer's check): 200 "ok" when Ready says so, else 503 with the cause
// as text and Retry-After. Mount it behind whatever the host puts in front
// of internal endpoints; it reveals only the cause's text.
func (b *Broker) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := b.Ready(ctx); err != nil {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err.Error())
			return
		}
		fmt.Fprintln(w, "ok")
	})
}
