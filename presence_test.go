package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"

	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/testkit"
)

// awaitPresence waits until b's presence of room is want (counts and first
// page).
func awaitPresence(t *testing.T, b *Broker, room string, want Presence) {
	t.Helper()
	var got Presence
	deadline := time.Now().Add(waitFor)
	for {
		var err error
		got, err = b.Presence(ctx, room)
		if err == nil && reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence of %q = %+v (err %v), want %+v", room, got, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nextPresence reads c's next frame, which must be a presence event or
// snapshot, and returns it as "type:user:count".
func nextPresence(t *testing.T, c client) string {
	t.Helper()
	f := testkit.Next(t, c)
	switch f.Type {
	case "join", "leave":
		return fmt.Sprintf("%s:%s:%d", f.Type, f.User, f.Count)
	case "presence":
		var ms []string
		for _, m := range f.Members {
			ms = append(ms, fmt.Sprintf("%s×%d", m.User, m.Conns))
		}
		return fmt.Sprintf("presence:%d:%d:%s", f.Count, f.Conns, strings.Join(ms, ","))
	}
	t.Fatalf("frame %+v, want a presence frame", f)
	return ""
}

func members(ms ...any) []Member {
	out := []Member{}
	for i := 0; i < len(ms); i += 2 {
		out = append(out, Member{User: ms[i].(string), Conns: ms[i+1].(int)})
	}
	return out
}

// A user with two tabs is one member; anonymous connections count as
// connections only; join and leave events come on a user's first and last
// connection, to the subscribers who asked, and never from another room.
func TestPresenceUsersNotTabs(t *testing.T) {
	// A closed SSE stream is noticed at its next write or keep-alive.
	b := newBroker(t, WithKeepAlive(100*time.Millisecond, time.Second))
	srv := serve(t, b, nil)
	watcher := dialWS(t, srv, dialOpts{user: "watcher"})
	watcher.send(t, map[string]any{"type": "subscribe", "room": "lobby", "presence": true})
	if f := watcher.next(t); f.Type != "subscribed" {
		t.Fatalf("frame %+v, want subscribed", f)
	}
	if got := nextPresence(t, watcher); got != "presence:1:1:watcher×1" {
		t.Fatalf("first presence frame %s", got)
	}
	plain := dialWS(t, srv, dialOpts{user: "plain", rooms: []string{"lobby"}}) // did not ask for events

	aliceWS := dialWS(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	aliceSSE := dialSSE(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	anon := dialWS(t, srv, dialOpts{rooms: []string{"lobby"}})
	elsewhere := dialWS(t, srv, dialOpts{user: "eve", rooms: []string{"other"}})
	awaitPresence(t, b, "lobby", Presence{Count: 3, Conns: 5, Members: members("alice", 2, "plain", 1, "watcher", 1)})
	aliceSSE.Close()
	awaitPresence(t, b, "lobby", Presence{Count: 3, Conns: 4, Members: members("alice", 1, "plain", 1, "watcher", 1)})
	bob := dialWS(t, srv, dialOpts{user: "bob", rooms: []string{"lobby"}})
	_ = aliceWS.Conn.Close(1000, "")
	_ = anon.Conn.Close(1000, "")
	awaitPresence(t, b, "lobby", Presence{Count: 3, Conns: 3, Members: members("bob", 1, "plain", 1, "watcher", 1)})
	_ = bob
	awaitPresence(t, b, "other", Presence{Count: 1, Conns: 1, Members: members("eve", 1)})
	_ = elsewhere
	dialWS(t, srv, dialOpts{user: "carol", rooms: []string{"lobby"}}) // the last event: nothing came between

	var got []string
	for range 5 {
		got = append(got, nextPresence(t, watcher))
	}
	want := []string{"join:plain:2", "join:alice:3", "join:bob:4", "leave:alice:3", "join:carol:4"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("watcher's events %q, want %q", got, want)
	}
	sendMarker(t, b, plain, "end")
	if fs := collect(t, plain, "end"); len(fs) != 0 {
		t.Fatalf("a subscriber that did not ask for presence got %+v", fs)
	}

	// Unsubscribing stops the events, and leaves the room.
	watcher.send(t, map[string]any{"type": "unsubscribe", "room": "lobby"})
	if f := watcher.next(t); f.Type != "unsubscribed" {
		t.Fatalf("frame %+v, want unsubscribed", f)
	}
	awaitPresence(t, b, "lobby", Presence{Count: 3, Conns: 3, Members: members("bob", 1, "carol", 1, "plain", 1)})
	dialWS(t, srv, dialOpts{user: "dave", rooms: []string{"lobby"}})
	awaitPresence(t, b, "lobby", Presence{Count: 4, Conns: 4, Members: members("bob", 1, "carol", 1, "dave", 1, "plain", 1)})
	sendMarker(t, b, watcher, "end")
	if fs := collect(t, watcher, "end"); len(fs) != 0 {
		t.Fatalf("events after unsubscribing: %+v", fs)
	}
}

// SSE asks for presence events with "presence" query parameters.
func TestPresenceOverSSE(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	dialWS(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	awaitPresence(t, b, "lobby", Presence{Count: 1, Conns: 1, Members: members("alice", 1)})
	sse := dialSSE(t, srv, dialOpts{user: "watcher", rooms: []string{"lobby", "quiet"}, presence: []string{"lobby"}})
	if got := nextPresence(t, sse); got != "presence:2:2:alice×1,watcher×1" {
		t.Fatalf("first presence frame %s", got)
	}
	dialWS(t, srv, dialOpts{user: "bob", rooms: []string{"lobby", "quiet"}})
	if got := nextPresence(t, sse); got != "join:bob:3" {
		t.Fatalf("event %s, want bob's join", got)
	}
}

// Member lists come in pages, in user order, with counts of the whole room.
func TestPresencePages(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	const n = 250
	for i := range n {
		dialWS(t, srv, dialOpts{user: fmt.Sprintf("user%03d", i), rooms: []string{"big"}})
	}
	eventually(t, "everyone in presence", func() bool {
		p, err := b.Presence(ctx, "big")
		return err == nil && p.Count == n
	})
	var all []string
	after := ""
	for page := 0; ; page++ {
		p, err := b.PresencePage(ctx, "big", after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if p.Count != n || p.Conns != n {
			t.Fatalf("page %d counts %d users, %d conns", page, p.Count, p.Conns)
		}
		for _, m := range p.Members {
			all = append(all, m.User)
		}
		if p.Next == "" {
			if page != 2 || len(p.Members) != 50 {
				t.Fatalf("last page is page %d with %d members", page, len(p.Members))
			}
			break
		}
		after = p.Next
	}
	for i, u := range all {
		if want := fmt.Sprintf("user%03d", i); u != want {
			t.Fatalf("member %d is %q, want %q", i, u, want)
		}
	}
	// The same over the protocol.
	c := dialWS(t, srv, dialOpts{user: "zed"})
	f := c.request(t, map[string]any{"type": "presence", "room": "big", "limit": 10, "after": "user100", "ref": 1})
	if f.Type != "presence" || f.Count != n || len(f.Members) != 10 || f.Members[0].User != "user101" || f.Next != "user110" {
		t.Fatalf("presence page: %+v", f)
	}
}

// Presence requests with bad input get an error frame; the connection and
// the others go on.
func TestPresenceBadInput(t *testing.T) {
	b := newBroker(t, WithSubscribeAuth(func(ctx context.Context, user, room string) error {
		if room == "secret" {
			return errors.New("no")
		}
		return nil
	}))
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "mallory"})
	cases := []struct {
		frame map[string]any
		code  string
	}{
		{map[string]any{"room": "*"}, "invalid_room"},
		{map[string]any{"room": ">"}, "invalid_room"},
		{map[string]any{"room": "a.b"}, "invalid_room"},
		{map[string]any{"room": ""}, "invalid_room"},
		{map[string]any{"room": strings.Repeat("x", 4096)}, "invalid_room"},
		{map[string]any{"room": "secret"}, "forbidden"},
		{map[string]any{"room": "lobby", "limit": -1}, "bad_request"},
		{map[string]any{"room": "lobby", "limit": MaxPresencePage + 1}, "bad_request"},
	}
	for i, tc := range cases {
		tc.frame["type"], tc.frame["ref"] = "presence", i
		f := c.request(t, tc.frame)
		if f.Type != "error" || f.ErrorCode() != tc.code {
			t.Errorf("presence %v: %+v, want error %s", tc.frame["room"], f, tc.code)
		}
	}
	// A denied subscription with presence gets no events either.
	c.send(t, map[string]any{"type": "subscribe", "room": "secret", "presence": true})
	if f := testkit.Next(t, c); f.Type != "error" || f.ErrorCode() != "forbidden" {
		t.Fatalf("subscribe to secret: %+v", f)
	}
	if f := c.request(t, map[string]any{"type": "presence", "room": "lobby", "ref": "ok"}); f.Type != "presence" || f.Count != 0 {
		t.Fatalf("after bad requests: %+v", f)
	}
	for _, room := range []string{"*", "a.b", ""} {
		if _, err := b.Presence(ctx, room); !errors.Is(err, ErrInvalidRoom) {
			t.Errorf("Presence(%q): %v", room, err)
		}
	}
	if _, err := b.PresencePage(ctx, "lobby", "", 0); err == nil {
		t.Error("PresencePage with limit 0 succeeded")
	}
}

// Three instances on a cluster agree on presence; an instance that shuts
// down leaves at once, and a killed one within the presence timeout.
func TestClusterPresence(t *testing.T) {
	bs := newCluster(t, 3, WithPresenceTimeout(900*time.Millisecond))
	s0, s1, s2 := serve(t, bs[0], nil), serve(t, bs[1], nil), serve(t, bs[2], nil)
	watcher := dialWS(t, s0, dialOpts{user: "watcher"})
	watcher.send(t, map[string]any{"type": "subscribe", "room": "lobby", "presence": true})
	watcher.next(t) // subscribed
	if got := nextPresence(t, watcher); got != "presence:1:1:watcher×1" {
		t.Fatalf("first presence frame %s", got)
	}
	dialWS(t, s0, dialOpts{user: "alice", rooms: []string{"lobby"}})
	dialSSE(t, s1, dialOpts{user: "alice", rooms: []string{"lobby"}})
	dialWS(t, s2, dialOpts{user: "bob", rooms: []string{"lobby"}})
	dialWS(t, s2, dialOpts{rooms: []string{"lobby"}})
	dialWS(t, s1, dialOpts{user: "eve", rooms: []string{"other"}})
	want := Presence{Count: 3, Conns: 5, Members: members("alice", 2, "bob", 1, "watcher", 1)}
	for _, b := range bs {
		awaitPresence(t, b, "lobby", want)
	}

	// Instance 1 shuts down: alice still has a tab on instance 0.
	if err := bs[1].Close(); err != nil {
		t.Fatal(err)
	}
	awaitPresence(t, bs[0], "lobby", Presence{Count: 3, Conns: 4, Members: members("alice", 1, "bob", 1, "watcher", 1)})

	// Instance 2 dies without a word: its NATS node is gone, and its
	// entries go once the presence timeout has passed.
	EmbeddedServer(bs[2]).NATS().Shutdown()
	awaitPresence(t, bs[0], "lobby", Presence{Count: 2, Conns: 2, Members: members("alice", 1, "watcher", 1)})

	var got []string
	for range 2 {
		got = append(got, nextPresence(t, watcher))
	}
	if want := []string{"join:alice:2", "join:bob:3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if got := nextPresence(t, watcher); got != "leave:bob:2" {
		t.Fatalf("event %s, want bob's leave", got)
	}
}

// When many users go at once (their instance died), watchers get one fresh
// presence frame rather than a leave each: a burst must not overflow their
// queues and disconnect them in the middle of a failover.
func TestPresenceBurstIsOneFrame(t *testing.T) {
	bs := newCluster(t, 2, WithPresenceTimeout(600*time.Millisecond), WithSendQueue(16, 1<<20))
	s0, s1 := serve(t, bs[0], nil), serve(t, bs[1], nil)
	watcher := dialWS(t, s0, dialOpts{user: "watcher", rooms: []string{"lobby"}, presence: []string{"lobby"}})
	if got := nextPresence(t, watcher); got != "presence:1:1:watcher×1" {
		t.Fatalf("first presence frame %s", got)
	}
	const n = 40
	for i := range n {
		dialWS(t, s1, dialOpts{user: fmt.Sprintf("u%02d", i), rooms: []string{"lobby"}})
		if got, want := nextPresence(t, watcher), fmt.Sprintf("join:u%02d:%d", i, i+2); got != want {
			t.Fatalf("event %s, want %s", got, want)
		}
	}
	EmbeddedServer(bs[1]).NATS().Shutdown() // 40 users gone at once
	if got := nextPresence(t, watcher); got != "presence:1:1:watcher×1" {
		t.Fatalf("after the burst: %s", got)
	}
	sendMarker(t, bs[0], watcher, "still here")
	if fs := collect(t, watcher, "still here"); len(fs) != 0 {
		t.Fatalf("then: %+v", fs)
	}
}

// Presence subscriptions end with the broker, also on a NATS connection
// the host owns.
func TestPresenceUnsubscribesOnClose(t *testing.T) {
	srv, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := New(WithNATSConn(nc), WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Presence(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := nc.NumSubscriptions(); n != 0 {
		t.Fatalf("%d subscriptions left on the host's connection", n)
	}
	if _, err := New(WithPresenceTimeout(time.Nanosecond)); err == nil {
		t.Fatal("a presence timeout of 1ns was accepted")
	}
}
