package fanout_test

import (
	"strconv"
	"testing"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/history"
	"github.com/roomcast/pubsub/internal/stats"
	"github.com/roomcast/pubsub/internal/wire"
)

// conn is a member as the broker's connections are: its gate in front of
// its queue.
type conn struct{ g *history.Gate }

var overflows int

func (c conn) Deliver(t *fanout.Topic, f *wire.Frame) bool { return c.g.Deliver(t, f) }
func (c conn) Overflowed()                                 { overflows++ }

// BenchmarkFanout is the in-memory fan-out of one message to the local
// members of a room: one op is one delivery (an enqueue on a connection,
// and the writer taking it off the queue). It must not allocate, with
// stats on (the broker's default) or off.
func BenchmarkFanout(b *testing.B) {
	for _, members := range []int{10, 1000, 10000} {
		b.Run(strconv.Itoa(members)+"/stats-on", func(b *testing.B) { benchFanout(b, members, stats.NewSet()) })
		b.Run(strconv.Itoa(members)+"/stats-off", func(b *testing.B) { benchFanout(b, members, nil) })
	}
}

func benchFanout(b *testing.B, members int, st *stats.Set) {
	t := fanout.NewTopicForBench()
	queues := make([]*fanout.Queue, members)
	for i := range queues {
		queues[i] = new(fanout.Queue)
		queues[i].Init(1024, 4<<20, nil, st, nil)
		t.Join(conn{history.NewGate(queues[i])}, func(bool) bool { return true })
	}
	f := wire.MessageFrame(wire.KindRoom, "lobby", wire.Envelope{ID: "x-1", Data: []byte(`{"text":"hi"}`)})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += members {
		t.FanoutForBench(f, st)
		if i%(8*members) == 0 { // the writers drain every few messages
			for _, q := range queues {
				if batch, _ := q.Take(); batch != nil {
					q.Recycle(batch)
				}
			}
		}
	}
	if overflows > 0 {
		b.Fatal("a member overflowed")
	}
}
