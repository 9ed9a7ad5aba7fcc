package presence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/testkit"
	"github.com/roomcast/pubsub/internal/wire"
)

// newInstances starts one embedded NATS server and n trackers on it, each
// an instance of its own with its own connection, as n app instances on
// one NATS system.
func newInstances(tb testing.TB, n int, timeout ...time.Duration) []*Tracker {
	tb.Helper()
	srv := testkit.StartNATS(tb, false)
	d := 15 * time.Second
	if len(timeout) > 0 {
		d = timeout[0]
	}
	ts := make([]*Tracker, n)
	for i := range ts {
		nc, err := srv.Connect()
		if err != nil {
			tb.Fatal(err)
		}
		p := New(Config{
			NC: nc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Subjects: subject.New("test"),
			Instance: fmt.Sprintf("inst%d", i), Timeout: d, FlushTimeout: 5 * time.Second,
		})
		if err := p.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			p.Shutdown()
			nc.Close()
		})
		ts[i] = p
	}
	return ts
}

// watch is a connection watching a room: it records the frames presence
// sends it.
type watch struct {
	mu     sync.Mutex
	frames []string
	full   bool // Deliver refuses, as a full queue would
	slow   chan struct{}
}

func newWatch() *watch { return &watch{slow: make(chan struct{}, 1)} }

func (w *watch) Deliver(f *wire.Frame) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.full {
		return false
	}
	w.frames = append(w.frames, string(f.JSON))
	return true
}

func (w *watch) Overflowed() { w.slow <- struct{}{} }

func (w *watch) seen() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.frames, "\n")
}

func page(t *testing.T, p *Tracker, room string) wire.PresencePage {
	t.Helper()
	pg, err := p.Page(context.Background(), room, "", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return pg
}

// Users, not tabs: a user with connections on two instances is one member
// with their total; anonymous connections count in conns only.
func TestPageCountsUsersAcrossInstances(t *testing.T) {
	ps := newInstances(t, 2)
	ps[0].Joined("lobby", "alice")
	ps[0].Joined("lobby", "alice")
	ps[0].Joined("lobby", "bob")
	ps[1].Joined("lobby", "alice")
	ps[1].Joined("lobby", "")
	ps[1].Joined("other", "carol")
	want := `{2 5 [{alice 3} {bob 1}] }`
	testkit.Eventually(t, "both instances in the view", func() bool { return fmt.Sprint(page(t, ps[1], "lobby")) == want })
	if got := fmt.Sprint(page(t, ps[0], "lobby")); got != want {
		t.Fatalf("instance 0 sees %s, want %s", got, want)
	}
	ps[0].Left("lobby", "alice")
	ps[0].Left("lobby", "alice")
	testkit.Eventually(t, "alice's instance-0 tabs gone", func() bool { return fmt.Sprint(page(t, ps[1], "lobby")) == `{2 3 [{alice 1} {bob 1}] }` })
}

// A watcher gets the room's page first (itself included), then one event
// per user's first connection in and last one out, on any instance.
func TestWatcherGetsPageThenJoinsAndLeaves(t *testing.T) {
	ps := newInstances(t, 2)
	w := newWatch()
	ps[0].Joined("lobby", "alice")
	if err := ps[0].Watch(context.Background(), w, "lobby", "", func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	ps[1].Joined("lobby", "bob")
	ps[1].Joined("lobby", "bob") // a second tab: no event
	ps[1].Left("lobby", "bob")
	ps[1].Left("lobby", "bob")
	want := strings.Join([]string{
		`{"type":"presence","room":"lobby","count":1,"conns":1,"members":[{"user":"alice","conns":1}]}`,
		`{"type":"join","room":"lobby","user":"bob","count":2}`,
		`{"type":"leave","room":"lobby","user":"bob","count":1}`,
	}, "\n")
	testkit.Eventually(t, "the events", func() bool { return w.seen() == want })
	ps[0].Unwatch(w, "lobby")
	ps[1].Joined("lobby", "carol")
	testkit.Eventually(t, "carol in the view", func() bool { return page(t, ps[0], "lobby").Count == 2 })
	if got := w.seen(); got != want {
		t.Fatalf("an unwatched room sent %q", got)
	}
}

// A watch that its connection no longer admits (it left the room or is
// closing) sends nothing.
func TestWatchNotAdmitted(t *testing.T) {
	ps := newInstances(t, 1)
	w := newWatch()
	if err := ps[0].Watch(context.Background(), w, "lobby", "", func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	ps[0].Joined("lobby", "alice")
	testkit.Eventually(t, "alice in the view", func() bool { return page(t, ps[0], "lobby").Count == 1 })
	if got := w.seen(); got != "" {
		t.Fatalf("not admitted, yet sent %q", got)
	}
}

// An instance that says goodbye is dropped at once; one that stops
// answering, after the timeout.
func TestInstancesLeaving(t *testing.T) {
	ps := newInstances(t, 3, 600*time.Millisecond)
	ps[1].Joined("lobby", "bob")
	ps[2].Joined("lobby", "carol")
	testkit.Eventually(t, "both in the view", func() bool { return page(t, ps[0], "lobby").Count == 2 })

	start := time.Now()
	ps[1].Shutdown()
	testkit.Eventually(t, "bob gone with his instance's goodbye", func() bool { return page(t, ps[0], "lobby").Count == 1 })
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("a goodbye took %v", d)
	}
	// ps[2] goes silent: its NATS connection is cut, no goodbye.
	ps[2].halt()
	ps[2].cfg.NC.Close()
	start = time.Now()
	testkit.Eventually(t, "carol gone with her silent instance", func() bool { return page(t, ps[0], "lobby").Count == 0 })
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("a silent instance was dropped after %v, before its timeout", d)
	}
}

// One update that changes many users at once (an instance died) is one
// fresh page for watchers, not a flood of events.
func TestBurstIsOneFrame(t *testing.T) {
	ps := newInstances(t, 2)
	w := newWatch()
	if err := ps[0].Watch(context.Background(), w, "big", "", func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	for i := range burst + 10 {
		ps[1].Joined("big", fmt.Sprintf("u%03d", i))
	}
	testkit.Eventually(t, "everyone in", func() bool { return page(t, ps[0], "big").Count == burst+10 })
	before := strings.Count(w.seen(), "\n")
	ps[1].Shutdown()
	testkit.Eventually(t, "everyone out", func() bool { return page(t, ps[0], "big").Count == 0 })
	frames := strings.Split(w.seen(), "\n")[before+1:]
	if len(frames) != 1 || !strings.Contains(frames[0], `"type":"presence"`) || !strings.Contains(frames[0], `"count":0`) {
		t.Fatalf("after the burst: %q", frames)
	}
}

// A watcher whose queue is full is told so, outside the tracker's lock.
func TestFullWatcherOverflows(t *testing.T) {
	ps := newInstances(t, 1)
	w := newWatch()
	w.full = true
	if err := ps[0].Watch(context.Background(), w, "lobby", "", func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.slow:
	case <-time.After(5 * time.Second):
		t.Fatal("a full watcher was not closed")
	}
}

// One asker cannot take the instance's presence capacity: its views count
// against MaxViewsPerAsker until they go, while another asker and the
// host's own Go code still get theirs.
func TestViewsPerAskerAreCapped(t *testing.T) {
	p := newInstances(t, 1)[0]
	ctx := context.Background()
	for i := range MaxViewsPerAsker {
		if _, err := p.Page(ctx, fmt.Sprint("r", i), "u:mallory", "", 1); err != nil {
			t.Fatalf("view %d: %v", i, err)
		}
	}
	if _, err := p.Page(ctx, "one-more", "u:mallory", "", 1); !errors.Is(err, ErrTooManyRoomsForUser) {
		t.Fatalf("view past the asker's cap: %v, want ErrTooManyRoomsForUser", err)
	}
	if _, err := p.Page(ctx, "r5", "u:mallory", "", 1); err != nil {
		t.Fatalf("a view the asker has already: %v", err)
	}
	if _, err := p.Page(ctx, "one-more", "u:alice", "", 1); err != nil {
		t.Fatalf("another asker: %v", err)
	}
	if _, err := p.Page(ctx, "go-code", "", "", 1); err != nil {
		t.Fatalf("the host's Go code: %v", err)
	}
}
