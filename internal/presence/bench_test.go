package presence

import (
	"context"
	"fmt"
	"testing"
)

// fill puts n users in room through the real path (changes published on
// NATS, applied by the view) and waits until the view has them all.
func fill(b *testing.B, p *Tracker, room string, n int) {
	b.Helper()
	ctx := context.Background()
	if _, err := p.Page(ctx, room, "", "", 1); err != nil { // the view, kept up to date from now on
		b.Fatal(err)
	}
	for i := range n {
		p.Joined(room, fmt.Sprintf("user%07d", i))
	}
	for {
		pg, err := p.Page(ctx, room, "", "", 1)
		if err != nil {
			b.Fatal(err)
		}
		if pg.Count == n {
			return
		}
	}
}

// The cost of asking a room's presence does not grow with the room: counts
// come from memory, a page from a sorted index rebuilt only after joins
// and leaves.
func BenchmarkPage(b *testing.B) {
	for _, n := range []int{100, 10_000, 100_000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			p := newInstances(b, 1)[0]
			fill(b, p, "big", n)
			b.ResetTimer()
			for b.Loop() {
				if _, err := p.Page(context.Background(), "big", "", "user0000050", 100); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A join and a leave cost the same in a room of 100 as in a room of
// 100,000: one small NATS message each, applied in O(1) by every view.
func BenchmarkJoinLeave(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			p := newInstances(b, 1)[0]
			fill(b, p, "big", n)
			b.ResetTimer()
			for b.Loop() {
				p.Joined("big", "newcomer")
				p.Left("big", "newcomer")
			}
			p.sync(context.Background(), "big") // the view has applied them all: its work is part of the cost
		})
	}
}
