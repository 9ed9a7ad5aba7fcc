package fanout

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/testkit"
	"github.com/roomcast/pubsub/internal/wire"
)

// engineOnNATS starts an embedded NATS server and an engine on it, and
// returns the engine and a second connection to publish with.
func engineOnNATS(t *testing.T, direct func(string, *wire.Frame)) (*Engine, *nats.Conn, *embedded.Server) {
	t.Helper()
	srv := testkit.StartNATS(t, false)
	nc := testkit.Connect(t, srv)
	if direct == nil {
		direct = func(string, *wire.Frame) {}
	}
	e, err := New(Config{NC: nc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DirectSubject: "t.conn.i.*", Direct: direct, SubscribeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// As the broker does after New: the direct subscription is on the
	// server before anything is published to it.
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(e.Stop)
	return e, testkit.Connect(t, srv), srv
}

// recorder is a member that records what it is given.
type recorder struct {
	mu     sync.Mutex
	got    []string
	refuse bool
	slow   int
	in     bool // its own record of membership, for Join and Leave
}

func (r *recorder) Deliver(t *Topic, f *wire.Frame) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse {
		return false
	}
	r.got = append(r.got, t.Name+":"+string(f.JSON[strings.Index(string(f.JSON), `"data":`)+7:len(f.JSON)-1]))
	return true
}

func (r *recorder) Overflowed() {
	r.mu.Lock()
	r.slow++
	r.mu.Unlock()
}

func (r *recorder) seen() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, ",")
}

func publish(t *testing.T, nc *nats.Conn, subj, data string) {
	t.Helper()
	if err := nc.Publish(subj, wire.AppendEnvelope(nil, wire.Envelope{ID: "x", Data: []byte(data)})); err != nil {
		t.Fatal(err)
	}
}

func join(t *Topic, m Member) { t.Join(m, func(already bool) bool { return !already }) }

// One subscription per topic, shared by its members; one dispatcher keeps
// NATS's order across topics; a member gets only its topics' messages.
func TestFanoutInOrderToMembersOnly(t *testing.T) {
	e, pub, srv := engineOnNATS(t, nil)
	room, err := e.Acquire(wire.KindRoom, "lobby", "t.room.lobby")
	if err != nil {
		t.Fatal(err)
	}
	room2, _ := e.Acquire(wire.KindRoom, "lobby", "t.room.lobby")
	user, _ := e.Acquire(wire.KindUser, "alice", "t.user.alice")
	if room != room2 {
		t.Fatal("two topics for one subject")
	}
	if n := srv.NATS().NumSubscriptions(); n < 2 {
		t.Fatalf("%d subscriptions", n)
	}
	alice, bob := &recorder{}, &recorder{}
	join(room, alice)
	join(user, alice)
	join(room, bob)
	for _, m := range []struct{ subj, data string }{{"t.room.lobby", "1"}, {"t.user.alice", "2"}, {"t.room.lobby", "3"}, {"t.room.other", "4"}} {
		publish(t, pub, m.subj, m.data)
	}
	testkit.Eventually(t, "delivery", func() bool { return alice.seen() == "lobby:1,alice:2,lobby:3" && bob.seen() == "lobby:1,lobby:3" })

	// Released as often as acquired: unsubscribed, and nothing delivered.
	base := srv.NATS().NumSubscriptions()
	e.Release(room)
	if srv.NATS().NumSubscriptions() != base {
		t.Fatal("released while still referenced")
	}
	e.Release(room2)
	e.Release(user)
	testkit.Eventually(t, "unsubscribed", func() bool { return srv.NATS().NumSubscriptions() == base-2 })
	if e.Topics() != 0 {
		t.Fatalf("%d topics left", e.Topics())
	}
}

// A member that cannot take a message is told after the fan-out; the
// others get it.
func TestFullMemberOverflows(t *testing.T) {
	e, pub, _ := engineOnNATS(t, nil)
	room, _ := e.Acquire(wire.KindRoom, "lobby", "t.room.lobby")
	full, ok := &recorder{refuse: true}, &recorder{}
	join(room, full)
	join(room, ok)
	publish(t, pub, "t.room.lobby", "1")
	testkit.Eventually(t, "delivery", func() bool { return ok.seen() == "lobby:1" })
	testkit.Eventually(t, "overflow", func() bool { full.mu.Lock(); defer full.mu.Unlock(); return full.slow == 1 })
}

// Messages for one connection arrive on the instance's one wildcard
// subscription, named by the subject's last token.
func TestDirect(t *testing.T) {
	got := make(chan string, 1)
	_, pub, _ := engineOnNATS(t, func(token string, f *wire.Frame) { got <- token + " " + string(f.JSON) })
	publish(t, pub, "t.conn.i.7f", `{"a":1}`)
	select {
	case g := <-got:
		if g != `7f {"type":"direct","id":"x","to":"conn","data":{"a":1}}` {
			t.Fatalf("got %s", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
	}
}

// A leave racing a rejoin of the same member never leaves the topic and
// the member disagreeing on membership: Join and Leave run the member's
// own step under the topic's lock.
func TestJoinLeaveRace(t *testing.T) {
	e, _, _ := engineOnNATS(t, nil)
	room, _ := e.Acquire(wire.KindRoom, "lobby", "t.room.lobby")
	m := &recorder{}
	admit := func(already bool) bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.in {
			return false
		}
		m.in = true
		return !already
	}
	commit := func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		was := m.in
		m.in = false
		return was
	}
	for range 1000 {
		var wg sync.WaitGroup
		wg.Go(func() { room.Join(m, admit) })
		wg.Go(func() { room.Leave(m, commit) })
		wg.Wait()
		room.mu.RLock()
		_, member := room.members[m]
		room.mu.RUnlock()
		m.mu.Lock()
		in := m.in
		m.mu.Unlock()
		if member != in {
			t.Fatalf("the topic says member %v, the member says %v", member, in)
		}
	}
}

// A closing engine refuses new topics.
func TestClosedEngineRefuses(t *testing.T) {
	e, _, _ := engineOnNATS(t, nil)
	e.Close()
	if _, err := e.Acquire(wire.KindRoom, "lobby", "t.room.lobby"); err != ErrClosed {
		t.Fatalf("Acquire on a closing engine: %v", err)
	}
}

// slowMember takes a while to take each frame, as a fan-out to many
// members would: a backlog drains over tens of milliseconds.
type slowMember struct{ recorder }

func (m *slowMember) Deliver(t *Topic, f *wire.Frame) bool {
	time.Sleep(20 * time.Microsecond)
	return m.recorder.Deliver(t, f)
}

// The dispatcher is behind (the writer pool shrunk) while a full batch's
// worth still waits after it took one, and no longer once it has drained
// the backlog; every message is delivered, in order.
func TestDispatcherBehindWhileABacklogDrains(t *testing.T) {
	e, pub, _ := engineOnNATS(t, nil)
	top, err := e.Acquire(wire.KindRoom, "r", "t.room.r")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Release(top)
	m := &blocker{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	slow := &slowMember{}
	join(top, m)
	join(top, slow)
	publish(t, pub, "t.room.r", "0")
	<-m.entered
	const n = 1000
	for i := 1; i <= n; i++ {
		publish(t, pub, "t.room.r", fmt.Sprint(i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.inbox) < n {
		if time.Now().After(deadline) {
			t.Fatalf("inbox at %d, want %d", len(e.inbox), n)
		}
		time.Sleep(time.Millisecond)
	}
	if e.behind.Load() {
		t.Fatal("behind before the dispatcher took a batch from the backlog")
	}
	sawBehind := make(chan bool, 1)
	go func() {
		saw := false
		for !e.Dispatched("t.room.r", n+1) {
			saw = saw || e.behind.Load()
			time.Sleep(100 * time.Microsecond)
		}
		sawBehind <- saw
	}()
	close(m.gate)
	if !<-sawBehind {
		t.Error("the dispatcher was never behind while 1,000 messages drained")
	}
	if e.behind.Load() {
		t.Error("still behind after the backlog drained")
	}
	got := strings.Split(slow.seen(), ",")
	if len(got) != n+1 || got[0] != "r:0" || got[n] != fmt.Sprintf("r:%d", n) {
		t.Fatalf("%d delivered (first %q), want %d in order", len(got), got[0], n+1)
	}
}
