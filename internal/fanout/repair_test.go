package fanout_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/history"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/testkit"
	"github.com/roomcast/pubsub/internal/wire"
)

// The engine on a room with history, as the broker runs it: stored
// messages come back republished on the room's live subject with their
// store position, and a gap in those positions is filled from the store.

type storedRoom struct {
	e       *fanout.Engine
	store   *history.Store
	cfg     history.Config
	t       *fanout.Topic
	member  *texts
	dropped func()
}

// texts is a member that keeps the data of what it is given.
type texts struct {
	mu  sync.Mutex
	got []string
}

func (m *texts) Deliver(_ *fanout.Topic, f *wire.Frame) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := string(f.JSON)
	m.got = append(m.got, s[strings.Index(s, `"data":`)+7:len(s)-1])
	return true
}
func (m *texts) Overflowed() {}

func (m *texts) seen() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.got, ",")
}

func newStoredRoom(t *testing.T, room string) *storedRoom {
	t.Helper()
	nc := testkit.Connect(t, testkit.StartNATS(t, true))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sr := &storedRoom{member: &texts{}}
	var err error
	sr.cfg = history.Config{NC: nc, Log: log, Subjects: subject.New("t"), Namespace: "t", Rules: []history.Rule{{Pattern: "*", Messages: 100}}}
	if sr.store, err = history.Open(sr.cfg); err != nil {
		t.Fatal(err)
	}
	sr.e, err = fanout.New(fanout.Config{NC: nc, Log: log, DirectSubject: "t.conn.i.*", Direct: func(string, *wire.Frame) {}, SubscribeTimeout: 5 * time.Second, Store: sr.store})
	if err != nil {
		t.Fatal(err)
	}
	sr.e.Start()
	t.Cleanup(sr.e.Stop)
	if sr.t, err = sr.e.Acquire(wire.KindRoom, room, sr.cfg.Subjects.Live(room)); err != nil {
		t.Fatal(err)
	}
	sr.t.Join(sr.member, func(bool) bool { return true })
	return sr
}

func (sr *storedRoom) publish(t *testing.T, text string) {
	t.Helper()
	if _, err := sr.store.Publish(context.Background(), sr.t.Name, history.Rule{Messages: 100}, wire.Envelope{Data: []byte(`"` + text + `"`)}, "t "+text); err != nil {
		t.Fatal(err)
	}
}

func (sr *storedRoom) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for sr.member.seen() != want {
		if time.Now().After(deadline) {
			t.Fatalf("delivered %s, want %s", sr.member.seen(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // nothing more, nothing twice
	if got := sr.member.seen(); got != want {
		t.Fatalf("then delivered %s", got)
	}
}

// Live messages that never reach an instance (its interest was gone for a
// moment, as when a route reconnects) are seen as a gap by the next one,
// which names its predecessor, and delivered from the store first: in
// order, nothing lost, nothing twice.
func TestLiveGapFilledFromStore(t *testing.T) {
	sr := newStoredRoom(t, "chat:gap")
	sr.publish(t, "1")
	sr.publish(t, "2")
	sr.expect(t, `"1","2"`)
	if err := sr.e.Resubscribe(sr.t, func() { sr.publish(t, "3"); sr.publish(t, "4") }); err != nil {
		t.Fatal(err)
	}
	sr.publish(t, "5")
	sr.expect(t, `"1","2","3","4","5"`)
}

// A store reset (the stream recreated, positions starting again at 1) does
// not silence a room whose subscribers stayed: lower positions are new
// messages, not repeats.
func TestLiveAfterStoreReset(t *testing.T) {
	sr := newStoredRoom(t, "chat:reset")
	for _, m := range []string{"1", "2", "3"} {
		sr.publish(t, m)
	}
	sr.expect(t, `"1","2","3"`)
	js, _ := jetstream.New(sr.cfg.NC)
	if err := js.DeleteStream(context.Background(), "T_HISTORY"); err != nil {
		t.Fatal(err)
	}
	var err error
	if sr.store, err = history.Open(sr.cfg); err != nil {
		t.Fatal(err)
	}
	sr.publish(t, "after")
	sr.expect(t, `"1","2","3","after"`)
}
