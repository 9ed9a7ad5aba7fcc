package fanout

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/testkit"
	"github.com/roomcast/pubsub/internal/wire"
)

// sink is a connection that records its writes; it can be made to block.
type sink struct {
	mu      sync.Mutex
	batches [][]string
	ended   bool
	failed  error
	gate    chan struct{} // non-nil: each write waits for a value
	entered chan struct{} // non-nil: told when a write starts
	fail    error         // returned by writes
}

func (s *sink) WriteBatch(frames []*wire.Frame) error {
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.gate != nil {
		<-s.gate
	}
	var b []string
	for _, f := range frames {
		b = append(b, string(f.JSON))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, b)
	return s.fail
}

func (s *sink) WriteEnd() {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
}

func (s *sink) WriteFailed(err error) {
	s.mu.Lock()
	s.failed = err
	s.mu.Unlock()
}

func (s *sink) written() (batches string, ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, b := range s.batches {
		parts = append(parts, strings.Join(b, "+"))
	}
	return strings.Join(parts, " "), s.ended
}

func frame(s string) *wire.Frame { return &wire.Frame{JSON: []byte(s)} }

// Frames queued while the writer is busy go out together, in order, in
// one write; an idle queue has no writer goroutine.
func TestQueueBatchesWhileTheWriterIsBusy(t *testing.T) {
	s := &sink{gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	q := NewQueue(100, 1<<20, s)
	q.Enqueue(frame("1"))
	<-s.entered // the writer holds "1"
	for i := 2; i <= 5; i++ {
		if !q.Enqueue(frame(fmt.Sprint(i))) {
			t.Fatal("refused")
		}
	}
	s.gate <- struct{}{}
	<-s.entered
	s.gate <- struct{}{}
	testkit.Eventually(t, "two writes", func() bool { b, _ := s.written(); return b == "1 2+3+4+5" })
	q.Wait()
	if n := goroutines("fanout.(*Queue).writeLoop"); n != 0 {
		t.Fatalf("%d writers left on an idle queue", n)
	}
	q.Enqueue(frame("6"))
	<-s.entered
	s.gate <- struct{}{}
	testkit.Eventually(t, "a new writer for new frames", func() bool { b, _ := s.written(); return b == "1 2+3+4+5 6" })
}

// A queue refuses what exceeds its bounds, by count or by bytes: the owner
// then closes the connection as a slow consumer.
func TestQueueBounds(t *testing.T) {
	for _, tc := range []struct {
		frames, bytes int
		sizes         []int
		want          []bool
	}{
		{frames: 2, bytes: 100, sizes: []int{1, 1, 1}, want: []bool{true, true, false}},
		{frames: 10, bytes: 5, sizes: []int{3, 2, 1}, want: []bool{true, true, false}},
	} {
		q := NewQueue(tc.frames, tc.bytes, nil) // driven: nothing takes them
		for i, n := range tc.sizes {
			if got := q.Enqueue(frame(strings.Repeat("x", n))); got != tc.want[i] {
				t.Errorf("%d frames, %d bytes: frame %d accepted %v, want %v", tc.frames, tc.bytes, i, got, tc.want[i])
			}
		}
	}
}

// Close with drain writes what is queued, then the end; without, drops it
// (a batch already being written goes out). Nothing is queued once closing.
func TestQueueClose(t *testing.T) {
	for _, drain := range []bool{true, false} {
		s := &sink{gate: make(chan struct{}), entered: make(chan struct{}, 10)}
		q := NewQueue(100, 1<<20, s)
		q.Enqueue(frame("a"))
		<-s.entered // the writer holds "a"
		q.Enqueue(frame("b"))
		q.Close(drain)
		if !q.Enqueue(frame("late")) {
			t.Fatal("a closing queue refused (it must drop)")
		}
		close(s.gate)
		q.Wait()
		got, ended := s.written()
		want := "a b"
		if !drain {
			want = "a"
		}
		if got != want || !ended {
			t.Errorf("drain %v: wrote %q, ended %v; want %q", drain, got, ended, want)
		}
	}
}

// A failed write is reported once; the queue then ends.
func TestQueueWriteFailure(t *testing.T) {
	s := &sink{fail: errors.New("broken pipe")}
	q := NewQueue(100, 1<<20, s)
	q.Enqueue(frame("a"))
	testkit.Eventually(t, "the failure", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.failed != nil })
	q.Close(false) // what the owner does on WriteFailed
	q.Wait()
	if _, ended := s.written(); !ended {
		t.Fatal("no end after a failure")
	}
}

// A paced enqueue keeps the queue at most half full, waiting for the
// writer; a writer that never takes anything stalls it.
func TestQueuePaced(t *testing.T) {
	q := NewQueue(4, 1<<20, nil) // driven: the test takes batches
	for i := range 2 {
		if err := q.EnqueuePaced(frame(fmt.Sprint(i)), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- q.EnqueuePaced(frame("2"), 5*time.Second) }()
	select {
	case err := <-done:
		t.Fatalf("a third frame on a queue of 4 went in at once (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	if batch, _ := q.Take(); len(batch) != 2 {
		t.Fatalf("took %d", len(batch))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	q.EnqueuePaced(frame("3"), time.Second)
	if err := q.EnqueuePaced(frame("4"), 20*time.Millisecond); !errors.Is(err, ErrStalled) {
		t.Fatalf("nothing taken: %v, want ErrStalled", err)
	}
	q.Close(true)
	if err := q.EnqueuePaced(frame("5"), time.Second); !errors.Is(err, ErrClosing) {
		t.Fatalf("closing: %v", err)
	}
}

// A driven queue (no sink) wakes its owner instead of starting a writer.
func TestQueueDrivenWakes(t *testing.T) {
	q := NewQueue(10, 1<<20, nil)
	q.Enqueue(frame("a"))
	select {
	case <-q.Wake():
	default:
		t.Fatal("no wake-up")
	}
	if batch, closing := q.Take(); len(batch) != 1 || closing {
		t.Fatalf("took %d, closing %v", len(batch), closing)
	}
	q.Close(true)
	<-q.Wake()
	if batch, closing := q.Take(); batch != nil || !closing {
		t.Fatal("a closed, empty queue must say closing")
	}
}

func goroutines(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), fn)
}
