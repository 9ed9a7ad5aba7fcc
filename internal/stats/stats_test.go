package stats

import (
	"slices"
	"sync"
	"testing"
	"time"
)

func TestDecimalBounds(t *testing.T) {
	got := DecimalBounds(50*time.Microsecond, 10*time.Millisecond)
	want := []time.Duration{50e3, 100e3, 250e3, 500e3, 1e6, 2.5e6, 5e6, 10e6}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestHistogramBucketsAndQuantile(t *testing.T) {
	h := NewHistogram(time.Millisecond, 10*time.Millisecond, 100*time.Millisecond)
	for _, d := range []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 50 * time.Millisecond, 99 * time.Millisecond, time.Second} {
		h.Observe(d)
	}
	b := h.Snapshot()
	if want := []uint64{2, 1, 2, 1}; !slices.Equal(b.Counts, want) {
		t.Fatalf("counts %v, want %v (a bound is inclusive, the last count is past every bound)", b.Counts, want)
	}
	if b.Count != 6 || b.Sum != 1152*time.Millisecond {
		t.Fatalf("count %d sum %v", b.Count, b.Sum)
	}
	// Sorted: 0, 1ms, 2ms, 50ms, 99ms, 1s; the q-quantile is the value of
	// rank q×count, reported as its bucket's upper bound.
	if q := b.Quantile(0.4); q != 10*time.Millisecond {
		t.Fatalf("p40 %v, want 10ms (2ms's bucket)", q)
	}
	if q := b.Quantile(0.5); q != 100*time.Millisecond {
		t.Fatalf("p50 %v, want 100ms (50ms's bucket)", q)
	}
	if q := b.Quantile(0.99); q != 100*time.Millisecond {
		t.Fatalf("p99 %v, want the last bound for a value past it", q)
	}
	if q := (Buckets{}).Quantile(0.5); q != 0 {
		t.Fatalf("empty p50 %v", q)
	}
}

func TestMaxKeepsLargestUnderConcurrency(t *testing.T) {
	var m Max
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				m.Observe(int64(g*1000 + i))
			}
		})
	}
	wg.Wait()
	if m.Load() != 7999 {
		t.Fatalf("max %d, want 7999", m.Load())
	}
	m.Observe(3)
	if m.Load() != 7999 {
		t.Fatal("a smaller value replaced the maximum")
	}
}

func TestNilSetCountsNothing(t *testing.T) {
	var s *Set
	s.Deny(DeniedOrigin)
	s.Delivered(3)
	s.Published(true)
	s.Wrote(10, 1, 1)
	s.Queued(5)
	s.Connected(true, 1)
	s.SlowConsumer()
	s.Resumed(time.Second, 4)
	s.TruncatedRoom()
	var c *Counter
	var g *Gauge
	var h *Histogram
	if c.Load() != 0 || g.Load() != 0 || h.Snapshot().Count != 0 {
		t.Fatal("nil instruments read non-zero")
	}
}

func TestSetEvents(t *testing.T) {
	s := NewSet()
	s.Delivered(3)
	s.Delivered(2)
	s.Published(true)
	s.Published(false)
	s.Published(false)
	s.Wrote(100, 4, s.Now()-int64(time.Millisecond))
	s.Wrote(50, 1, 0) // a control frame: no delay observed
	s.Connected(true, 1)
	s.Connected(false, 1)
	s.Connected(false, -1)
	s.Deny(DeniedPublish)
	s.Resumed(3*time.Millisecond, 7)
	switch {
	case s.Deliveries.Load() != 5:
		t.Fatal("deliveries")
	case s.PublishedClient.Load() != 1 || s.PublishedServer.Load() != 2:
		t.Fatal("published")
	case s.Writes.Load() != 2 || s.WrittenBytes.Load() != 150 || s.WrittenFrames.Load() != 5:
		t.Fatal("writes")
	case s.DeliveryDelay.Snapshot().Count != 1:
		t.Fatal("delay observed for a write without a message")
	case s.WebSocket.Load() != 1 || s.SSE.Load() != 0:
		t.Fatal("connections")
	case s.Denied[DeniedPublish].Load() != 1 || s.Denied[DeniedSubscribe].Load() != 0:
		t.Fatal("denied")
	case s.Resumes.Load() != 1 || s.Replayed.Load() != 7 || s.ResumeDuration.Snapshot().Count != 1:
		t.Fatal("resumes")
	}
}
