package fanout

import (
	"errors"
	"sync"
	"time"

	"github.com/roomcast/pubsub/internal/stats"
	"github.com/roomcast/pubsub/internal/wire"
)

// Queue is one connection's bounded queue of frames not yet written, and
// the writer that drains it. Frames are shared, read-only, between every
// queue they are on.
//
// The writer joins everything queued into one write (see Sink): under load,
// batches grow by themselves and each system call carries many frames. A
// queue that would exceed its bounds refuses the frame; its owner then
// closes the connection as a slow consumer, so a slow client never delays
// the others.
//
// A queue is written in one of two ways. With a Sink, by a worker of the
// engine's pool (Writers) while there is something to write (an idle
// connection holds no goroutine for it). Without one, the owner's own
// goroutine drains it,
// woken through Wake (a Server-Sent Events stream that must be written by
// the handler that owns the response).
type Queue struct {
	maxFrames, maxBytes int
	sink                Sink
	wake                chan struct{} // no sink: signalled when there is something to take
	stats               *stats.Set
	writers             *Writers // nil: a goroutine of its own

	mu      sync.Mutex
	frames  []*wire.Frame
	spare   []*wire.Frame // a drained batch's array, reused
	bytes   int
	writing bool           // with a sink: in the pool's line, or being written
	closing bool           // Close was called: nothing more is queued
	drained chan struct{}  // signalled when the writer takes a batch or the queue closes
	running sync.WaitGroup // the writer, while it runs
}

// Sink writes a queue's batches to a connection.
type Sink interface {
	// WriteBatch writes frames with one write call where it can.
	WriteBatch(frames []*wire.Frame) error
	// WriteEnd is called once, after the last batch of a closing queue: it
	// ends the connection (a close frame, a close event).
	WriteEnd()
	// WriteFailed is called when WriteBatch fails: the owner closes the
	// connection. The queue stops writing.
	WriteFailed(err error)
}

// NewQueue returns an empty queue bounded by frames and bytes, written
// through sink (nil: by the owner, see Wake).
func NewQueue(frames, bytes int, sink Sink) *Queue {
	q := new(Queue)
	q.Init(frames, bytes, sink, nil, nil)
	return q
}

// Init makes q an empty queue, as NewQueue does, for a queue that is a
// field of its connection: the fan-out touches one object per delivery,
// which at ten thousand connections is the difference between cache hits
// and misses.
// Its depth when the writer takes it is counted in s (nil: not counted);
// it is written by one of writers (the engine's pool: Engine.Writers; nil:
// a goroutine of its own while it has frames).
func (q *Queue) Init(frames, bytes int, sink Sink, s *stats.Set, writers *Writers) {
	q.maxFrames, q.maxBytes, q.sink, q.stats, q.writers = frames, bytes, sink, s, writers
	if sink == nil {
		q.wake = make(chan struct{}, 1)
	}
}

// Wake is signalled when a queue without a sink has frames to take, or is
// closing.
func (q *Queue) Wake() <-chan struct{} { return q.wake }

// Enqueue queues f. It reports false when the queue is full: the caller
// must then close the connection as a slow consumer (outside of any lock
// of its fan-out). A closing queue drops frames and reports true.
func (q *Queue) Enqueue(f *wire.Frame) bool {
	q.mu.Lock()
	ok, start := q.enqueueLocked(f)
	q.mu.Unlock()
	if start {
		q.writers.start(q)
	}
	return ok
}

func (q *Queue) enqueueLocked(f *wire.Frame) (ok, startWriter bool) {
	if q.closing {
		return true, false
	}
	if len(q.frames) >= q.maxFrames || q.bytes+len(f.JSON) > q.maxBytes {
		return false, false
	}
	q.frames = append(q.frames, f)
	q.bytes += len(f.JSON)
	return true, q.kickLocked()
}

// EnqueueAll queues frames in order, stopping at the first that does not
// fit; it reports whether all did.
func (q *Queue) EnqueueAll(frames []*wire.Frame) bool {
	q.mu.Lock()
	ok, start := true, false
	for _, f := range frames {
		var s bool
		if ok, s = q.enqueueLocked(f); !ok {
			break
		}
		start = start || s
	}
	q.mu.Unlock()
	if start {
		q.writers.start(q)
	}
	return ok
}

// ErrClosing: the queue is closing and takes no more paced frames.
var ErrClosing = errors.New("fanout: queue closing")

// ErrStalled: a paced enqueue waited a whole timeout for the writer to take
// anything.
var ErrStalled = errors.New("fanout: queue stalled")

// EnqueuePaced queues f once the queue is under half of its bounds,
// waiting for the writer up to timeout at a time: a replay of any length
// holds a bounded queue, and leaves the other half to live frames.
func (q *Queue) EnqueuePaced(f *wire.Frame, timeout time.Duration) error {
	for {
		q.mu.Lock()
		if q.closing {
			q.mu.Unlock()
			return ErrClosing
		}
		if len(q.frames) == 0 || len(q.frames) < q.maxFrames/2 && q.bytes+len(f.JSON) <= q.maxBytes/2 {
			_, start := q.enqueueLocked(f)
			q.mu.Unlock()
			if start {
				q.writers.start(q)
			}
			return nil
		}
		if q.drained == nil {
			q.drained = make(chan struct{}, 1)
		}
		drained := q.drained
		q.mu.Unlock()
		t := time.NewTimer(timeout)
		select {
		case <-drained: // the writer took a batch, or the queue is closing
			t.Stop()
		case <-t.C:
			return ErrStalled
		}
	}
}

// kickLocked makes the writer look at the queue: wakes the owner of a
// queue without a sink, or reports whether the caller must hand the queue
// to its writers (it is there at most once, and not while idle).
func (q *Queue) kickLocked() (startWriter bool) {
	if q.sink == nil {
		select {
		case q.wake <- struct{}{}:
		default:
		}
		return false
	}
	if q.writing {
		return false
	}
	q.writing = true
	q.running.Add(1)
	return true
}

// Take hands the queued frames to the writer. When the queue is empty it
// returns nil, and whether the queue is closing. The batch goes back with
// Recycle once written.
func (q *Queue) Take() (batch []*wire.Frame, closing bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) == 0 {
		return nil, q.closing
	}
	batch = q.frames
	q.frames, q.spare = q.spare, nil
	q.bytes = 0
	q.stats.Queued(len(batch))
	q.signalDrained()
	return batch, false
}

func (q *Queue) signalDrained() {
	if q.drained != nil {
		select {
		case q.drained <- struct{}{}:
		default:
		}
	}
}

// Recycle keeps a small written batch's array for the next one; a large
// one is left to the garbage collector, so idle connections stay small.
func (q *Queue) Recycle(batch []*wire.Frame) {
	if cap(batch) > 64 {
		return
	}
	clear(batch)
	q.mu.Lock()
	if q.spare == nil {
		q.spare = batch[:0]
	}
	q.mu.Unlock()
}

// Close stops the queue taking frames. With drain, what is queued is still
// written, then the end (Sink.WriteEnd); without, it is dropped. Close is
// idempotent; the first call decides.
func (q *Queue) Close(drain bool) {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return
	}
	q.closing = true
	q.signalDrained() // a paced enqueue waits there: let it see the close
	if !drain {
		clear(q.frames)
		q.frames, q.bytes = q.frames[:0], 0
	}
	start := q.kickLocked()
	q.mu.Unlock()
	if start {
		q.writers.start(q)
	}
}

// Closing reports whether Close was called.
func (q *Queue) Closing() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closing
}

// Wait waits for the writer goroutine, if any, to finish.
func (q *Queue) Wait() { q.running.Wait() }

// writeLoop drains the queue through the sink, joining queued frames into
// one write. On a closing queue it writes the end last and stays marked as
// running, so that no other writer starts.
//
// Alone (stuck == nil) it runs until the queue is empty. In a pool it takes
// one turn: one batch (or the end), then reports again when frames are
// left, so that the pool puts the queue back in line behind the others (a
// connection that never empties does not keep a worker); stuck is armed
// around everything that may wait on the network (see Writers).
func (q *Queue) writeLoop(stuck *stuckTimer) (again bool) {
	for {
		batch, closing := q.Take()
		if batch == nil {
			if closing {
				stuck.arm()
				q.sink.WriteEnd() // a close handshake: a round trip, or its timeout
				stuck.disarm()
				q.running.Done()
				return false
			}
			q.mu.Lock()
			if len(q.frames) > 0 || q.closing { // raced with Enqueue or Close
				q.mu.Unlock()
				continue
			}
			q.writing = false
			q.mu.Unlock()
			q.running.Done()
			return false
		}
		stuck.arm()
		err := q.sink.WriteBatch(batch)
		if err != nil {
			q.sink.WriteFailed(err)
		}
		stuck.disarm()
		q.Recycle(batch)
		if stuck == nil {
			continue
		}
		q.mu.Lock()
		more := len(q.frames) > 0 || q.closing
		if !more {
			q.writing = false
		}
		q.mu.Unlock()
		if !more {
			q.running.Done()
		}
		return more
	}
}

// Len returns the frames and bytes queued now.
func (q *Queue) Len() (frames, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames), q.bytes
}

// Bounds returns the queue's limits: frames and bytes.
func (q *Queue) Bounds() (frames, bytes int) { return q.maxFrames, q.maxBytes }
