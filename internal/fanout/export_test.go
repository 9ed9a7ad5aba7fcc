package fanout

import (
	"github.com/roomcast/pubsub/internal/stats"
	"github.com/roomcast/pubsub/internal/wire"
)

// NewTopicForBench is a topic without a subscription, for benchmarks of
// the in-memory fan-out.
func NewTopicForBench() *Topic { return &Topic{members: make(map[Member]struct{})} }

// FanoutForBench is the dispatcher's fan-out of f to t's members,
// counting into s (nil: stats off).
var benchOne [1]*wire.Frame

func (t *Topic) FanoutForBench(f *wire.Frame, s *stats.Set) {
	benchOne[0] = f
	benchScratch = t.fanout(benchOne[:], benchScratch, s)
}

var benchScratch []Member
