package fanout

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/wire"
)

// countingSink counts the writers inside WriteBatch at once.
type countingSink struct {
	sink
	in, peak *atomic.Int32
	hold     time.Duration
}

func (s *countingSink) WriteBatch(frames []*wire.Frame) error {
	n := s.in.Add(1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	time.Sleep(s.hold)
	s.in.Add(-1)
	return s.sink.WriteBatch(frames)
}

// A run of messages to many queues is written by a few workers, not one
// goroutine per queue, with one write per queue for the run, every frame
// in order.
func TestWritersBoundAndBatch(t *testing.T) {
	w := &Writers{max: 4, slow: time.Minute} // no write is stuck here
	var in, peak atomic.Int32
	const queues, frames = 200, 10
	qs := make([]*Queue, queues)
	sinks := make([]*countingSink, queues)
	for i := range qs {
		sinks[i] = &countingSink{in: &in, peak: &peak, hold: time.Millisecond}
		qs[i] = new(Queue)
		qs[i].Init(1024, 1<<20, sinks[i], nil, w)
	}
	before := runtime.NumGoroutine()
	run := make([]*wire.Frame, frames) // a run of messages, as the dispatcher fans it out
	for n := range run {
		run[n] = &wire.Frame{JSON: []byte(fmt.Sprint(n))}
	}
	for _, q := range qs {
		q.EnqueueAll(run)
	}
	if g := runtime.NumGoroutine() - before; g > 4+2 { // the workers, and timers' own
		t.Errorf("%d goroutines for %d queues", g, queues)
	}
	writes := 0
	for i, q := range qs {
		q.Close(true)
		q.Wait()
		got, ended := sinks[i].written()
		if !ended || got == "" {
			t.Fatalf("queue %d: %q ended %v", i, got, ended)
		}
		sinks[i].mu.Lock()
		writes += len(sinks[i].batches)
		total := 0
		for _, b := range sinks[i].batches {
			total += len(b)
		}
		sinks[i].mu.Unlock()
		if total != frames {
			t.Fatalf("queue %d got %d frames, want %d", i, total, frames)
		}
	}
	if p := peak.Load(); p > 4 {
		t.Errorf("%d writes at once, the pool has 4 workers", p)
	}
	if writes != queues {
		t.Errorf("%d writes for %d queues given a run of %d frames each: want one write each", writes, queues, frames)
	}
	waitGoroutines(t, before)
}

// A write that blocks (a client's full socket buffer) does not hold the
// other queues back: its worker stops counting and another one starts.
func TestWritersStuckWriteDoesNotBlockOthers(t *testing.T) {
	w := &Writers{max: 1, slow: slowWrite}
	blocked := &sink{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	var slow, fast Queue
	slow.Init(16, 1<<20, blocked, nil, w)
	free := &sink{}
	fast.Init(16, 1<<20, free, nil, w)
	before := runtime.NumGoroutine()
	slow.Enqueue(&wire.Frame{JSON: []byte("a")})
	<-blocked.entered // the only worker is inside the blocked write
	fast.Enqueue(&wire.Frame{JSON: []byte("b")})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := free.written(); got != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a blocked write held the other queue back")
		}
		time.Sleep(time.Millisecond)
	}
	close(blocked.gate)
	slow.Close(true)
	fast.Close(true)
	slow.Wait()
	fast.Wait()
	if got, ended := blocked.written(); got == "" || !ended {
		t.Fatalf("the blocked queue: %q ended %v", got, ended)
	}
	waitGoroutines(t, before)
	w.mu.Lock()
	active := w.active
	w.mu.Unlock()
	if active != 0 {
		t.Fatalf("%d workers counted active after all ended", active)
	}
}

func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, want at most %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// While the dispatcher is behind, the pool shrinks to behindMax workers,
// so that the dispatcher gets the CPU to catch up: workers beyond it end
// after their batch, none starts beyond it. When it has caught up (Resume)
// the pool grows back to max for the queues waiting, and every frame is
// written in order.
func TestWritersYieldToABehindDispatcher(t *testing.T) {
	var behind atomic.Bool
	w := &Writers{max: 4, behindMax: 1, slow: time.Minute, behind: behind.Load}
	var in, peak atomic.Int32
	const queues = 40
	qs := make([]*Queue, queues)
	sinks := make([]*countingSink, queues)
	for i := range qs {
		sinks[i] = &countingSink{in: &in, peak: &peak, hold: 2 * time.Millisecond}
		qs[i] = new(Queue)
		qs[i].Init(1024, 1<<20, sinks[i], nil, w)
	}
	before := runtime.NumGoroutine()
	writes := func() (n int) {
		for _, s := range sinks {
			s.mu.Lock()
			n += len(s.batches)
			s.mu.Unlock()
		}
		return n
	}
	waitWrites := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for writes() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d writes, want %d", writes(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	// Not behind: the pool grows to max; then the dispatcher falls behind
	// and the workers beyond behindMax end after their batch.
	for _, q := range qs {
		q.Enqueue(&wire.Frame{JSON: []byte("a")})
	}
	waitWrites(4)
	if p := peak.Load(); p < 2 {
		t.Fatalf("%d writes at once with the dispatcher keeping up, want up to 4", p)
	}
	behind.Store(true)
	waitWrites(12) // every worker has asked for its next queue since
	peak.Store(in.Load())
	waitWrites(20)
	if p := peak.Load(); p != 1 {
		t.Fatalf("%d writes at once while the dispatcher is behind, want 1", p)
	}
	w.mu.Lock()
	active := w.active
	w.mu.Unlock()
	if active != 1 {
		t.Fatalf("%d workers active while the dispatcher is behind, want 1", active)
	}

	// Caught up: Resume starts workers for the queues still waiting, with
	// nothing new enqueued.
	behind.Store(false)
	peak.Store(0)
	w.Resume()
	waitWrites(queues)
	if p := peak.Load(); p < 2 {
		t.Errorf("%d writes at once after Resume, want up to 4", p)
	}

	for _, q := range qs {
		q.Enqueue(&wire.Frame{JSON: []byte("b")})
	}
	for i, q := range qs {
		q.Close(true)
		q.Wait()
		if got, ended := sinks[i].written(); !ended || got != "a b" {
			t.Fatalf("queue %d wrote %q ended %v", i, got, ended)
		}
	}
	waitGoroutines(t, before)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active != 0 {
		t.Fatalf("%d workers counted active after all ended", w.active)
	}
}
