package pubsub

import (
	"fmt"
	"testing"
)

// fillPresence puts n users in room through the real path (changes
// published on NATS, applied by the view) and waits until the view has
// them all.
func fillPresence(b *testing.B, br *Broker, room string, n int) {
	b.Helper()
	if _, err := br.Presence(ctx, room); err != nil { // the view, kept up to date from now on
		b.Fatal(err)
	}
	for i := range n {
		br.pres.joined(room, fmt.Sprintf("user%07d", i))
	}
	for {
		p, err := br.Presence(ctx, room)
		if err != nil {
			b.Fatal(err)
		}
		if p.Count == n {
			return
		}
	}
}

// The cost of asking a room's presence does not grow with the room: counts
// come from memory, a page from a sorted index rebuilt only after joins
// and leaves.
func BenchmarkPresence(b *testing.B) {
	for _, n := range []int{100, 10_000, 100_000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			br, err := New(WithLogger(quietLogger()))
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			fillPresence(b, br, "big", n)
			b.ResetTimer()
			for b.Loop() {
				if _, err := br.PresencePage(ctx, "big", "user0000050", 100); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A join and a leave cost the same in a room of 100 as in a room of
// 100,000: one small NATS message each, applied in O(1) by every view.
func BenchmarkPresenceJoinLeave(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			br, err := New(WithLogger(quietLogger()))
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			fillPresence(b, br, "big", n)
			b.ResetTimer()
			for b.Loop() {
				br.pres.joined("big", "newcomer")
				br.pres.left("big", "newcomer")
			}
			br.pres.sync(ctx, "big") // the view has applied them all: its work is part of the cost
		})
	}
}
