package fanout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/wire"
)

// blocker is a member whose first delivery waits for its gate: it holds the
// dispatcher, as a fan-out slower than the publishers would.
type blocker struct {
	recorder
	entered chan struct{}
	gate    chan struct{}
}

func (b *blocker) Deliver(t *Topic, f *wire.Frame) bool {
	select {
	case b.entered <- struct{}{}:
		<-b.gate
	default:
	}
	return b.recorder.Deliver(t, f)
}

// A publisher that runs ahead of the dispatcher waits until it has caught
// up, and nothing is lost: NATS would drop what overflows the inbox.
func TestAdmitWaitsForABehindDispatcher(t *testing.T) {
	e, pub, _ := engineOnNATS(t, nil)
	ctx := context.Background()
	if err := e.Admit(ctx); err != nil {
		t.Fatalf("Admit with an empty inbox: %v", err)
	}
	top, err := e.Acquire(wire.KindRoom, "r", "t.room.r")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Release(top)
	m := &blocker{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	join(top, m)

	publish(t, pub, "t.room.r", "0")
	<-m.entered // the dispatcher is held
	const n = admitHigh + 1000
	for i := 1; i <= n; i++ {
		if err := pub.Publish("t.room.r", wire.AppendEnvelope(nil, wire.Envelope{ID: "x", Data: []byte(fmt.Sprint(i))})); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.inbox) < admitHigh {
		if time.Now().After(deadline) {
			t.Fatalf("inbox at %d, want %d", len(e.inbox), admitHigh)
		}
		time.Sleep(time.Millisecond)
	}

	canceled, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if err := e.Admit(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Admit with the dispatcher %d behind: %v, want it to wait until ctx is canceled", len(e.inbox), err)
	}
	// A deadline is the caller's whole budget: Admit takes half of it at
	// most, then lets the publish go.
	start := time.Now()
	short, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	if err := e.Admit(short); err != nil || time.Since(start) < 80*time.Millisecond || time.Since(start) > 190*time.Millisecond {
		t.Fatalf("Admit with a 200 ms deadline: %v after %v, want nil after about 100 ms", err, time.Since(start))
	}

	admitted := make(chan error, 1)
	go func() { admitted <- e.Admit(ctx) }()
	select {
	case err := <-admitted:
		t.Fatalf("Admit returned (%v) while the dispatcher is held", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(m.gate)
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatal(err)
		}
		if l := len(e.inbox); l >= admitHigh {
			t.Errorf("admitted with %d in the inbox, want below %d", l, admitHigh)
		}
	case <-time.After(admitMaxWait - time.Second):
		t.Fatal("Admit still waiting after the dispatcher caught up")
	}

	for !e.Dispatched("t.room.r", n+1) {
		if time.Now().After(deadline) {
			t.Fatal("not all dispatched")
		}
		time.Sleep(time.Millisecond)
	}
	got := strings.Split(m.seen(), ",")
	if len(got) != n+1 {
		t.Fatalf("%d delivered, want %d", len(got), n+1)
	}
	for i, g := range got {
		if g != fmt.Sprintf("r:%d", i) {
			t.Fatalf("delivery %d is %q", i, g)
		}
	}
}

// A publisher waiting when the dispatcher ends goes at once, and nobody
// waits for a dispatcher that has ended.
func TestAdmitAfterStop(t *testing.T) {
	e, pub, _ := engineOnNATS(t, nil)
	top, err := e.Acquire(wire.KindRoom, "r", "t.room.r")
	if err != nil {
		t.Fatal(err)
	}
	m := &blocker{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	join(top, m)
	publish(t, pub, "t.room.r", "0")
	<-m.entered
	stray := &nats.Msg{Subject: "t.room.none", Data: wire.AppendEnvelope(nil, wire.Envelope{ID: "x", Data: []byte("1")})}
	for range admitHigh {
		e.inbox <- stray // a backlog: the dispatcher is held, then stopped
	}
	admitted := make(chan error, 1)
	go func() { admitted <- e.Admit(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	go e.Stop()
	time.Sleep(10 * time.Millisecond)
	close(m.gate) // the dispatcher finishes its message and sees the stop
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(admitMaxWait / 2):
		t.Fatal("a publisher still waits for a stopped dispatcher")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	if err := e.Admit(ctx); err != nil || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("Admit after Stop: %v after %v", err, time.Since(start))
	}
}
