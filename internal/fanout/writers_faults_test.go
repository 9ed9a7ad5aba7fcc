package fanout

// The pool of writers and the dispatcher's runs under the connections that
// hurt them: a close handshake to a client that is gone, a connection that
// never empties, a pool saturated for a while, a burst larger than a queue.

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/testkit"
	"github.com/roomcast/pubsub/internal/wire"
)

// endBlockingSink's WriteEnd waits, as wsConn.WriteEnd waits for the
// peer's close frame (one round trip; up to closeHandshakeTimeout, 2 s,
// for a peer that does not answer), or as a hijacked SSE stream's close
// event waits on a full socket (up to the write timeout).
type endBlockingSink struct {
	sink
	endEntered chan struct{}
	endGate    chan struct{}
}

func (s *endBlockingSink) WriteEnd() {
	s.endEntered <- struct{}{}
	<-s.endGate
	s.sink.WriteEnd()
}

// A queue's end (the close handshake) that takes long does not hold the
// other queues back, as a long WriteBatch does not.
func TestWritersSlowEndDoesNotBlockOthers(t *testing.T) {
	w := &Writers{max: 1, slow: slowWrite}
	closing := &endBlockingSink{endEntered: make(chan struct{}, 1), endGate: make(chan struct{})}
	free := &sink{}
	var a, b Queue
	a.Init(16, 1<<20, closing, nil, w)
	b.Init(16, 1<<20, free, nil, w)
	a.Close(true)
	<-closing.endEntered // the only worker is in a's WriteEnd
	b.Enqueue(&wire.Frame{JSON: []byte("b")})
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		if got, _ := free.written(); got != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("another queue's close handshake (WriteEnd, not under the stuck timer) held the pool: a frame waited %v and more", 500*time.Millisecond)
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(closing.endGate)
	b.Close(true)
	a.Wait()
	b.Wait()
}

// refillingSink is a connection whose client keeps up with a stream that
// never pauses: while each batch is written, the next frame arrives.
type refillingSink struct {
	sink
	q      *Queue
	stop   atomic.Bool
	writes atomic.Int32
}

func (s *refillingSink) WriteBatch(frames []*wire.Frame) error {
	s.writes.Add(1)
	time.Sleep(50 * time.Microsecond) // a fast write: far below slowWrite
	if !s.stop.Load() {
		s.q.Enqueue(&wire.Frame{JSON: []byte("x")})
	}
	return nil
}

// A queue that always has more to write (a busy connection that keeps up)
// does not keep its worker for ever: the other ready queues get their turn.
//
// Its writes never count as stuck here (slow: an hour): on a loaded machine
// a 50µs write can take over slowWrite of wall time, and the stuck timer
// would then start a worker for the others by accident.
func TestWritersBusyQueueDoesNotStarveOthers(t *testing.T) {
	w := &Writers{max: 1, slow: time.Hour}
	var a, b Queue
	busy := &refillingSink{q: &a}
	free := &sink{}
	a.Init(1024, 1<<20, busy, nil, w)
	b.Init(1024, 1<<20, free, nil, w)
	a.Enqueue(&wire.Frame{JSON: []byte("x")})
	testkit.Eventually(t, "the busy queue's writes", func() bool { return busy.writes.Load() > 10 })
	start := time.Now()
	b.Enqueue(&wire.Frame{JSON: []byte("b")})
	for {
		if got, _ := free.written(); got != "" {
			break
		}
		if time.Since(start) > 500*time.Millisecond {
			t.Errorf("a queue that is never empty kept the only worker: another queue's frame waited more than 500ms (%d writes of the busy one meanwhile)", busy.writes.Load())
			break
		}
		time.Sleep(time.Millisecond)
	}
	busy.stop.Store(true)
	a.Close(true)
	b.Close(true)
	a.Wait()
	b.Wait()
}

// The FIFO of ready queues stays as large as what waits in it, also when it
// never empties (a pool that is saturated for a while): the slots already
// taken are not kept, nor copied again at each growth.
func TestWritersReadyListDoesNotGrowWhileNeverEmpty(t *testing.T) {
	w := &Writers{max: 1, slow: time.Hour}
	w.active = 1 // one worker busy: start queues without spawning, next hands out
	var a, b Queue
	w.start(&a)
	for i := range 100_000 {
		q := &b
		if i%2 == 1 {
			q = &a
		}
		w.start(q)
		if w.next() == nil {
			t.Fatal("the FIFO was empty")
		}
	}
	w.mu.Lock()
	waiting, size := len(w.ready)-w.head, cap(w.ready)
	w.mu.Unlock()
	if waiting != 1 {
		t.Fatalf("%d waiting, want 1", waiting)
	}
	if size > 1024 {
		t.Errorf("1 queue waiting, and the FIFO's array holds %d slots (%d KiB): it grows with every queue handed out since it was last empty", size, size*8>>10)
	}
}

// slowSocket writes like a client that keeps up with a megabyte a
// millisecond: each write takes a millisecond, whatever its size.
type slowSocket struct {
	sink
	frames atomic.Int32
}

func (s *slowSocket) WriteBatch(frames []*wire.Frame) error {
	time.Sleep(time.Millisecond)
	s.frames.Add(int32(len(frames)))
	return nil
}

// queueMember delivers into its own queue, as conn.go's member does
// through the gate.
type queueMember struct {
	q        *Queue
	overflow atomic.Int32
}

func (m *queueMember) Deliver(_ *Topic, f *wire.Frame) bool { return m.q.Enqueue(f) }
func (m *queueMember) Overflowed()                          { m.overflow.Add(1); m.q.Close(false) }

// A burst of large messages to a room, waiting in the inbox, is not
// queued to a member faster than the dispatcher could build it: a client
// that keeps up is not closed as a slow consumer because the burst, taken
// as one run, is larger than its queue's byte bound.
func TestEngineRunOfLargeMessagesDoesNotOverflowAMemberThatKeepsUp(t *testing.T) {
	srv := testkit.StartNATS(t, false)
	nc := testkit.Connect(t, srv)
	e, err := New(Config{NC: nc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DirectSubject: "t.conn.i.*", Direct: func(string, *wire.Frame) {}, SubscribeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	room, err := e.Acquire(wire.KindRoom, "lobby", "t.room.lobby")
	if err != nil {
		t.Fatal(err)
	}
	m := &queueMember{q: new(Queue)}
	socket := &slowSocket{}
	m.q.Init(1024, 4<<20, socket, nil, e.Writers()) // the defaults: 1024 frames, 4 MiB
	join(room, m)
	pub := testkit.Connect(t, srv)
	// 160 messages of 30 KiB (4.8 MB in all, under 3% of the queue's
	// frames): the writer takes a megabyte a millisecond.
	data := `"` + strings.Repeat("x", 30<<10) + `"`
	const n = 160
	for i := range n {
		if err := pub.Publish("t.room.lobby", wire.AppendEnvelope(nil, wire.Envelope{ID: fmt.Sprint("x-", i), Data: []byte(data)})); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "the burst in the inbox", func() bool { return len(e.inbox) == n })
	e.Start()
	var once sync.Once
	testkit.Eventually(t, "the burst written", func() bool {
		if m.overflow.Load() > 0 {
			once.Do(func() {
				t.Errorf("a member whose writer takes a megabyte a millisecond was closed as a slow consumer by a burst of %d messages of 30 KiB: the run queued them all at once, over the queue's 4 MiB", n)
			})
			return true
		}
		return socket.frames.Load() == n
	})
	m.q.Close(true)
	m.q.Wait()
}
