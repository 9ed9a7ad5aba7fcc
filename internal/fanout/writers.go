package fanout

import (
	"runtime"
	"sync"
	"time"
)

// Writers drains the queues that have frames to write with a bounded number
// of goroutines, in turns: a worker writes one batch of a queue, and a
// queue with more to write goes back in line behind the others.
//
// Why not one goroutine per queue: a message to a room of tens of thousands
// of connections would make as many goroutines runnable at once. Each
// writes that one message, while the dispatcher, NATS's goroutines and the
// rest of the burst wait behind them in the run queue (measured at 19,500
// connections: 1.2 messages per write, and seconds of latency). With a few
// workers, the queues they have not reached yet keep collecting frames, so
// each is written with one system call per burst, and the dispatcher keeps
// its share of the CPU.
//
// A write that takes long (a client's socket buffer is full: the write
// waits for it, up to the write deadline), or a close handshake waiting for
// a client that is gone, does not hold the others back: a worker stuck
// longer than slowWrite no longer counts, and another one starts.
//
// The dispatcher comes first. It is the one goroutine that feeds every
// queue, and the workers never block (a write to a socket with room in its
// buffer returns at once), so with all of them running it gets a share of
// the CPU as small as theirs: it falls behind, the queues it has not fed
// yet get written one message at a time, and every message costs a system
// call (measured: 10,000 users with 10 messages each, the dispatcher's
// inbox at 57,000 messages while the workers ran out of queues). While it
// is behind, the pool shrinks to behindMax workers, one per two CPUs; the
// dispatcher calls Resume when it has caught up.
type Writers struct {
	max       int           // workers that are not stuck
	behindMax int           // the same while the dispatcher is behind
	slow      time.Duration // a write longer than this is stuck (slowWrite)
	behind    func() bool   // the dispatcher has a backlog (nil: never)

	mu     sync.Mutex
	ready  []*Queue // FIFO: ready[head:]
	head   int
	active int // workers running and not stuck
}

// slowWrite is how long a write may take before its worker is counted as
// stuck (on loopback a write takes microseconds; a full socket buffer, up
// to the write deadline).
const slowWrite = 2 * time.Millisecond

// NewWriters returns a pool of 4 workers per CPU, one per two CPUs (at
// least one) while the dispatcher is behind: the rest is left to the
// dispatcher, NATS's goroutines and the publishers.
func NewWriters() *Writers {
	n := runtime.GOMAXPROCS(0)
	return &Writers{max: 4 * n, behindMax: max(1, n/2), slow: slowWrite}
}

// start queues q for a worker, starting one if fewer than limit are active.
// A nil pool starts a goroutine for q alone.
func (w *Writers) start(q *Queue) {
	if w == nil {
		go q.writeLoop(nil)
		return
	}
	w.mu.Lock()
	w.ready = append(w.ready, q)
	spawn := w.active < w.limit()
	if spawn {
		w.active++
	}
	w.mu.Unlock()
	if spawn {
		go w.work()
	}
}

// limit is how many workers may be active: behindMax while the dispatcher
// is behind, max otherwise. Called with mu held.
func (w *Writers) limit() int {
	if w.behindMax < w.max && w.behind != nil && w.behind() {
		return w.behindMax
	}
	return w.max
}

// Resume starts workers for the queues waiting, up to max: the dispatcher
// calls it when it is no longer behind, so that the workers limit held back
// come back. It takes the pool's lock, so a worker that saw the dispatcher
// behind just before has ended by then or will see it caught up.
func (w *Writers) Resume() {
	w.mu.Lock()
	n := min(w.max-w.active, len(w.ready)-w.head)
	if n > 0 {
		w.active += n
	}
	w.mu.Unlock()
	for range n {
		go w.work()
	}
}

// next takes the oldest ready queue, or reports that the worker must end:
// none is ready, or more workers are active than limit.
func (w *Writers) next() *Queue {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.head == len(w.ready) || w.active > w.limit() {
		w.active--
		if w.head == len(w.ready) {
			clear(w.ready)
			w.ready, w.head = w.ready[:0], 0
			if cap(w.ready) > 1<<16 {
				w.ready = nil // a huge burst's array goes
			}
		}
		return nil
	}
	q := w.ready[w.head]
	w.ready[w.head] = nil
	w.head++
	// While the line never empties (a saturated pool), its taken front
	// would grow forever: move the waiting part to the front from time to
	// time.
	if w.head >= 64 && 2*w.head >= len(w.ready) {
		n := copy(w.ready, w.ready[w.head:])
		clear(w.ready[n:])
		w.ready, w.head = w.ready[:n], 0
	}
	return q
}

func (w *Writers) work() {
	s := &stuckTimer{w: w}
	s.t = time.AfterFunc(time.Hour, s.fire)
	s.t.Stop()
	defer s.t.Stop()
	for q := w.next(); q != nil; q = w.next() {
		if q.writeLoop(s) {
			w.again(q)
		}
	}
}

// again puts q, which has more to write, back in line behind the others.
func (w *Writers) again(q *Queue) {
	w.mu.Lock()
	w.ready = append(w.ready, q)
	w.mu.Unlock()
}

// stuckTimer is a worker's: armed around each write, it fires when the
// write takes longer than slowWrite.
type stuckTimer struct {
	w       *Writers
	t       *time.Timer
	mu      sync.Mutex
	armed   bool      // a write is under way
	armedAt time.Time // since
	stuck   bool      // and it fired: the worker does not count
}

// arm starts timing a write; on a nil timer (a queue alone) it does nothing.
func (s *stuckTimer) arm() {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.armed, s.armedAt, s.stuck = true, time.Now(), false
	s.mu.Unlock()
	s.t.Reset(s.w.slow)
}

// fire: the write is slow; the worker stops counting, and another one
// starts if queues are waiting. A late fire (from an earlier write) does
// nothing.
func (s *stuckTimer) fire() {
	s.mu.Lock()
	if !s.armed || s.stuck || time.Since(s.armedAt) < s.w.slow {
		s.mu.Unlock()
		return
	}
	s.stuck = true
	s.mu.Unlock()
	w := s.w
	w.mu.Lock()
	w.active--
	spawn := w.head < len(w.ready) && w.active < w.limit()
	if spawn {
		w.active++
	}
	w.mu.Unlock()
	if spawn {
		go w.work()
	}
}

// disarm: the write returned; a worker that was stuck counts again (the
// pool shrinks back to max as workers look for their next queue).
func (s *stuckTimer) disarm() {
	if s == nil {
		return
	}
	s.t.Stop()
	s.mu.Lock()
	stuck := s.stuck
	s.armed, s.stuck = false, false
	s.mu.Unlock()
	if stuck {
		s.w.mu.Lock()
		s.w.active++
		s.w.mu.Unlock()
	}
}
