package fanout

import "github.com/roomcast/pubsub/internal/wire"

// Resubscribe drops t's NATS subscription, runs meanwhile (messages sent
// then never reach this instance, as during a route's reconnect), and
// subscribes again.
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

// NewTopicForBench is a topic without a subscription, for benchmarks of
// the in-memory fan-out.
func NewTopicForBench() *Topic { return &Topic{members: make(map[Member]struct{})} }

// FanoutForBench is the dispatcher's fan-out of f to t's members.
func (t *Topic) FanoutForBench(f *wire.Frame) { benchScratch = t.fanout(f, benchScratch) }

var benchScratch []Member
