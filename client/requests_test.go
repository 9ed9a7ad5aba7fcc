package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/client"
)

func TestHistoryPresenceCall(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t,
				pubsub.WithHistory("chat:*", pubsub.History{Messages: 100}),
				pubsub.WithCall("add", func(ctx context.Context, c pubsub.Call) ([]byte, error) {
					var xs []int
					if err := json.Unmarshal(c.Data, &xs); err != nil {
						return nil, &pubsub.CallError{Code: "invalid", Message: "want numbers"}
					}
					sum := 0
					for _, x := range xs {
						sum += x
					}
					return json.Marshal(map[string]any{"sum": sum, "user": c.Conn.User()})
				}))
			ctx := ctxT(t)
			for i := range 5 {
				if _, err := s.PublishAck(ctx, "chat:1", text(fmt.Sprint("h", i))); err != nil {
					t.Fatal(err)
				}
			}
			alice := dial(t, s.URL+"/live", "alice", tr.t, nil)
			hist, err := alice.History(ctx, "chat:1", 3)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range hist {
				got = append(got, textOf(m))
				if m.ID == "" || m.Time.IsZero() || m.Room != "chat:1" {
					t.Errorf("history message %+v", m)
				}
			}
			if !slices.Equal(got, []string{"h2", "h3", "h4"}) {
				t.Fatalf("history %q", got)
			}
			if _, err := alice.History(ctx, "lobby", 3); !errors.Is(err, client.ErrNoHistory) {
				t.Fatalf("history of lobby: %v", err)
			}

			// Presence: a snapshot then events, and a paged query.
			sub, err := alice.Subscribe(ctx, "lobby", client.WithPresence())
			if err != nil {
				t.Fatal(err)
			}
			events := presencePull(t, sub)
			if ev := nextEvent(t, events); ev.Type != "presence" || ev.Snapshot.Count != 1 || ev.Snapshot.Members[0].User != "alice" {
				t.Fatalf("first presence event %+v", ev)
			}
			bob := dial(t, s.URL+"/live", "bob", tr.t, nil)
			bobLobby, err := bob.Subscribe(ctx, "lobby")
			if err != nil {
				t.Fatal(err)
			}
			if ev := nextEvent(t, events); ev.Type != "join" || ev.User != "bob" || ev.Count != 2 {
				t.Fatalf("join %+v", ev)
			}
			p, err := alice.Presence(ctx, "lobby", client.PresenceQuery{Limit: 1})
			if err != nil || p.Count != 2 || len(p.Members) != 1 || p.Members[0].User != "alice" || p.Next != "alice" {
				t.Fatalf("presence page 1: %+v %v", p, err)
			}
			p, err = alice.Presence(ctx, "lobby", client.PresenceQuery{After: p.Next, Limit: 1})
			if err != nil || len(p.Members) != 1 || p.Members[0].User != "bob" || p.Next != "" {
				t.Fatalf("presence page 2: %+v %v", p, err)
			}
			if err := bobLobby.Unsubscribe(ctx); err != nil {
				t.Fatal(err)
			}
			if ev := nextEvent(t, events); ev.Type != "leave" || ev.User != "bob" || ev.Count != 1 {
				t.Fatalf("leave %+v", ev)
			}

			// Calls: a reply, the handler's own error, no handler, a timeout from ctx.
			reply, err := alice.Call(ctx, "add", []int{1, 2, 3})
			if err != nil || string(reply) != `{"sum":6,"user":"alice"}` {
				t.Fatalf("call: %s %v", reply, err)
			}
			var e *client.Error
			if _, err := alice.Call(ctx, "add", "x"); !errors.As(err, &e) || e.Code != "invalid" || e.Message != "want numbers" {
				t.Fatalf("call with bad data: %v", err)
			}
			if _, err := alice.Call(ctx, "nope", nil); !errors.Is(err, client.ErrNoHandler) {
				t.Fatalf("call of no method: %v", err)
			}
			if err := alice.Ping(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func presencePull(t *testing.T, s *client.Subscription) func() (client.PresenceEvent, error, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	next, stop := iter.Pull2(s.Presence(ctx))
	t.Cleanup(stop)
	return next
}

func nextEvent(t *testing.T, next func() (client.PresenceEvent, error, bool)) client.PresenceEvent {
	t.Helper()
	ev, err, ok := next()
	if !ok || err != nil {
		t.Fatalf("presence event: %v", err)
	}
	return ev
}

// The inbox: kept while away, delivered on connect, acknowledged by the
// iterator, so the next connection does not get it again.
func TestInbox(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t, pubsub.WithInbox(pubsub.History{Messages: 10}))
			ctx := ctxT(t)
			for i := range 3 {
				if _, err := s.SendToInbox(ctx, "carol", text(fmt.Sprint("n", i))); err != nil {
					t.Fatal(err)
				}
			}
			c := dial(t, s.URL+"/live", "carol", tr.t, nil)
			var got []string
			for m, err := range c.Inbox(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				var d struct{ Text string }
				_ = json.Unmarshal(m.Data, &d)
				got = append(got, d.Text)
				if len(got) == 3 {
					break // n0 and n1 acknowledged; n2 not: the loop broke on it
				}
			}
			if !slices.Equal(got, []string{"n0", "n1", "n2"}) {
				t.Fatalf("inbox %q", got)
			}
			deadline := time.Now().Add(wait)
			for {
				left, err := s.Inbox(ctx, "carol")
				if err != nil {
					t.Fatal(err)
				}
				if len(left) == 1 && strings.Contains(string(left[0].Data), "n2") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("inbox left %d messages", len(left))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// Server code moves the connection into a room: its messages come on
// Client.Messages, and the room stays the client's across a reconnect.
func TestServerMadeRoom(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t)
			c := dial(t, s.URL+"/live", "dave", tr.t, &client.Options{MinDelay: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
			ctx := ctxT(t)
			msgs := pull(t, c.Messages(ctx))
			if n, err := s.SubscribeUser(ctx, "dave", "game:7"); n != 1 || err != nil {
				t.Fatalf("SubscribeUser: %d %v", n, err)
			}
			_ = s.Publish(ctx, "game:7", text("move"))
			if m := next(t, msgs); m.Room != "game:7" || textOf(m) != "move" {
				t.Fatalf("got %+v", m)
			}
			first := c.Conn()
			if err := s.DisconnectConn(ctx, first, pubsub.Disconnect{Reconnect: true}); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, func() bool {
				cs, _ := s.UserConns(ctx, "dave")
				return len(cs) == 1 && cs[0].ID != first && len(cs[0].Rooms) == 1
			})
			_ = s.Publish(ctx, "game:7", text("after"))
			if m := next(t, msgs); textOf(m) != "after" {
				t.Fatalf("after the reconnect: %+v", m)
			}
		})
	}
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An anonymous SSE client cannot POST: a new room makes a new stream, and
// the rooms it had stay subscribed.
func TestAnonymousSSEChangesRooms(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.URL+"/open", "", client.SSE, nil)
	ctx := ctxT(t)
	a, err := c.Subscribe(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Subscribe(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Publish(ctx, "a", text("to a"))
	_ = s.Publish(ctx, "b", text("to b"))
	if m := next(t, pull(t, a.Messages(ctx))); textOf(m) != "to a" {
		t.Fatalf("a got %+v", m)
	}
	if m := next(t, pull(t, b.Messages(ctx))); textOf(m) != "to b" {
		t.Fatalf("b got %+v", m)
	}
}

// A proxy that blocks WebSocket upgrades: Auto falls back to SSE and the
// client works.
func TestAutoFallsBackToSSE(t *testing.T) {
	s := newServer(t)
	blocker := httpProxy(t, s.URL, nil)
	c := dial(t, blocker.URL+"/live", "erin", client.Auto, nil)
	if c.Transport() != client.SSE {
		t.Fatalf("transport %q", c.Transport())
	}
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Publish(ctx, "lobby", text("through the proxy"))
	if m := next(t, pull(t, sub.Messages(ctx))); textOf(m) != "through the proxy" {
		t.Fatalf("got %+v", m)
	}
}
