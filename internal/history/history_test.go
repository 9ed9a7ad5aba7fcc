package history_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/history"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/testkit"
	"github.com/roomcast/pubsub/internal/wire"
)

var ctx = context.Background()

// openStore starts an embedded NATS server with JetStream and opens the
// history store on it with rules.
func openStore(t *testing.T, rules ...history.Rule) *history.Store {
	t.Helper()
	nc := testkit.Connect(t, testkit.StartNATS(t, true))
	s, err := history.Open(history.Config{NC: nc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Subjects: subject.New("t"), Namespace: "t", Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func store(t *testing.T, s *history.Store, room string, texts ...string) []uint64 {
	t.Helper()
	rule, ok := s.Rule(room)
	if !ok {
		t.Fatalf("no rule for %s", room)
	}
	var seqs []uint64
	for _, text := range texts {
		seq, err := s.Publish(ctx, room, rule, wire.Envelope{From: "u", Data: []byte(`"` + text + `"`)}, room+" "+text)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

func TestRulesAreValidated(t *testing.T) {
	for _, r := range []history.Rule{{Pattern: "[", Messages: 1}, {Pattern: "*"}, {Pattern: "*", Messages: -1}, {Pattern: "*", MaxAge: time.Millisecond}} {
		if err := history.ValidateRules([]history.Rule{r}); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if err := history.ValidateRules([]history.Rule{{Pattern: "chat:*", Messages: 10}, {Pattern: "*", MaxAge: time.Hour}}); err != nil {
		t.Fatal(err)
	}
}

// The first rule that matches decides; rooms without one keep nothing.
func TestRuleMatching(t *testing.T) {
	s := openStore(t, history.Rule{Pattern: "chat:*", Messages: 3}, history.Rule{Pattern: "*", Messages: 100})
	if r, _ := s.Rule("chat:1"); r.Messages != 3 {
		t.Fatalf("chat:1 keeps %d", r.Messages)
	}
	if r, _ := s.Rule("lobby"); r.Messages != 100 {
		t.Fatalf("lobby keeps %d", r.Messages)
	}
	var none *history.Store
	if _, ok := none.Rule("x"); ok {
		t.Fatal("no store, yet a rule")
	}
}

// A room keeps its last Messages, even when another rule lets the stream
// keep more; Last reads them oldest first; positions are shared by rooms
// and increase.
func TestStoreKeepsTheRoomsSuffix(t *testing.T) {
	s := openStore(t, history.Rule{Pattern: "small", Messages: 2}, history.Rule{Pattern: "*", Messages: 100})
	a := store(t, s, "small", "1", "2", "3")
	b := store(t, s, "big", "x", "y")
	if a[2] >= b[0] || b[0] >= b[1] {
		t.Fatalf("positions %v then %v", a, b)
	}
	msgs, err := s.Last(ctx, "small", 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%d:%s:%s", m.Seq, m.From, m.Data))
	}
	if want := fmt.Sprintf(`%d:u:"2",%d:u:"3"`, a[1], a[2]); strings.Join(got, ",") != want {
		t.Fatalf("kept %v, want %s", got, want)
	}
	if msgs, _ := s.Last(ctx, "big", 1); len(msgs) != 1 || string(msgs[0].Data) != `"y"` {
		t.Fatalf("last 1 of big: %+v", msgs)
	}
}

// A position followed by what is kept is no gap; one whose successors were
// dropped by the room's count is; a position past the end (a reset store)
// is.
func TestGapAfter(t *testing.T) {
	s := openStore(t, history.Rule{Pattern: "*", Messages: 3})
	seqs := store(t, s, "r", "1", "2", "3", "4", "5", "6")
	for _, tc := range []struct {
		after uint64
		gap   bool
	}{{seqs[3], false}, {seqs[2], false}, {seqs[1], true}, {seqs[5], false}, {seqs[5] + 100, true}} {
		gap, head, err := s.GapAfter(ctx, "r", tc.after)
		if err != nil {
			t.Fatal(err)
		}
		if gap != tc.gap || head != seqs[5] {
			t.Errorf("after %d: gap %v head %d, want %v, %d", tc.after, gap, head, tc.gap, seqs[5])
		}
	}
}

// queueSink writes a queue's batches into a slice.
type queueSink struct {
	mu  sync.Mutex
	ids []string
}

func (w *queueSink) WriteBatch(fs []*wire.Frame) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range fs {
		var v struct{ Type, ID, Data string }
		_ = json.Unmarshal(f.JSON, &v)
		w.ids = append(w.ids, v.Type+":"+v.Data)
	}
	return nil
}
func (w *queueSink) WriteEnd()         {}
func (w *queueSink) WriteFailed(error) {}

func (w *queueSink) seen() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.ids, ",")
}

// heldRoom is a connection's gate, its queue written into w, and a room
// it holds for a resume.
func heldRoom(room string) (*history.Gate, *queueSink, *fanout.Topic) {
	w := &queueSink{}
	g := history.NewGate(fanout.NewQueue(1024, 1<<20, w))
	topic := &fanout.Topic{Name: room}
	g.Hold(topic)
	return g, w, topic
}

type owner struct{ slow, failed chan error }

func (o owner) Slow()            { o.slow <- errors.New("slow") }
func (o owner) Failed(err error) { o.failed <- err }

// A resume replays what the client missed, then the live frames held
// meanwhile, without the ones the replay already gave, in store order.
func TestResumeMergesReplayAndHeldLiveFrames(t *testing.T) {
	s := openStore(t, history.Rule{Pattern: "*", Messages: 100})
	seqs := store(t, s, "r", "1", "2", "3", "4")
	g, w, topic := heldRoom("r")
	// Live frames arrive while held: 4 (stored before the hold, so also
	// replayed) and 5 (after).
	more := store(t, s, "r", "5")
	for i, seq := range []uint64{seqs[3], more[0]} {
		f := wire.MessageFrame(wire.KindRoom, "r", wire.Envelope{ID: fmt.Sprint(seq), Data: []byte(`"` + []string{"4", "5"}[i] + `"`)})
		f.Stored = true
		if !g.Deliver(topic, f) {
			t.Fatal("refused")
		}
	}
	if w.seen() != "" {
		t.Fatalf("held frames were written: %s", w.seen())
	}
	o := owner{make(chan error, 1), make(chan error, 1)}
	g.Resume(ctx, s, map[*fanout.Topic]string{topic: "r"}, seqs[1], nil, time.Second, o)
	testkit.Eventually(t, "the replay, then the held frames", func() bool { return w.seen() == "message:3,message:4,message:5" })
	// Now live: straight to the queue.
	g.Deliver(topic, wire.MessageFrame(wire.KindRoom, "r", wire.Envelope{ID: "99", Data: []byte(`"6"`)}))
	testkit.Eventually(t, "live frames", func() bool { return w.seen() == "message:3,message:4,message:5,message:6" })
	select {
	case <-o.slow:
		t.Fatal("closed as slow")
	case err := <-o.failed:
		t.Fatal(err)
	default:
	}
}

// A resume from a position whose successors are gone says "truncated" for
// the room, then goes on from what is kept.
func TestResumeTruncated(t *testing.T) {
	s := openStore(t, history.Rule{Pattern: "*", Messages: 2})
	seqs := store(t, s, "r", "1", "2", "3", "4")
	g, w, topic := heldRoom("r")
	g.Resume(ctx, s, map[*fanout.Topic]string{topic: "r"}, seqs[0], nil, time.Second, owner{make(chan error, 1), make(chan error, 1)})
	testkit.Eventually(t, "truncated", func() bool { return w.seen() == "truncated:" })
}
