package pubsub_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	. "github.com/roomcast/pubsub"
)

func TestWebSocketSubscribeAndReceive(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	if c.Welcome.User != "alice" {
		t.Fatalf("welcome user = %q", c.Welcome.User)
	}

	// A subscribe frame, acknowledged with the client's ref.
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "news", "ref": 7}); f.Type != "subscribed" || f.Room != "news" || string(f.Ref) != "7" {
		t.Fatalf("subscribe answer = %+v", f)
	}
	for i := range 3 {
		if err := b.Publish(ctx, "lobby", msg(fmt.Sprint("hi ", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(ctx, "news", []byte("{\n  \"text\": \"pretty\"\n}")); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for i := range 3 {
		f := c.next(t)
		if f.Type != "message" || f.Room != "lobby" || f.Text() != fmt.Sprint("hi ", i) || f.From != "" {
			t.Fatalf("message %d = %+v", i, f)
		}
		if f.ID == "" || ids[f.ID] {
			t.Fatalf("message id %q missing or repeated", f.ID)
		}
		ids[f.ID] = true
	}
	if f := c.next(t); f.Room != "news" || f.Text() != "pretty" {
		t.Fatalf("pretty-printed JSON message = %+v", f)
	}

	// Unsubscribe: nothing more from news.
	if f := c.request(t, map[string]any{"type": "unsubscribe", "room": "news", "ref": "u"}); f.Type != "unsubscribed" || f.Room != "news" {
		t.Fatalf("unsubscribe answer = %+v", f)
	}
	_ = b.Publish(ctx, "news", msg("after unsubscribe"))
	_ = b.Publish(ctx, "lobby", msg("still here"))
	expectOnly(t, b, c, "message:lobby:still here")
	if f := c.request(t, map[string]any{"type": "ping", "ref": 1}); f.Type != "pong" || string(f.Ref) != "1" {
		t.Fatalf("ping answer = %+v", f)
	}
}

func TestSSESubscribeAndReceive(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c := dialSSE(t, srv, dialOpts{user: "bob", rooms: []string{"lobby", "news"}})
	if c.Welcome.User != "bob" || c.Welcome.Conn == "" {
		t.Fatalf("welcome = %+v", c.Welcome)
	}
	_ = b.Publish(ctx, "lobby", msg("one"))
	_ = b.Publish(ctx, "news", msg("two"))
	_ = b.SendToUser(ctx, "bob", msg("three"))
	want := []string{"message:lobby:one", "message:news:two", "direct::three"}
	for i, w := range want {
		f := c.next(t)
		if got := f.Type + ":" + f.Room + ":" + f.Text(); got != w {
			t.Fatalf("event %d = %q, want %q", i, got, w)
		}
		// The id is in the frame; the SSE id field is kept for store
		// positions (the resume cursor), which plain rooms do not have.
		if f.ID == "" || f.SSEID != "" {
			t.Fatalf("event %d: SSE id %q, frame id %q", i, f.SSEID, f.ID)
		}
	}
	if !strings.HasPrefix(c.Raw(), "retry: 2000\n") {
		t.Fatalf("stream does not start with retry: %q", c.Raw()[:20])
	}
}

func TestRoomIsolation(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	a := dialWS(t, srv, dialOpts{user: "u1", rooms: []string{"a"}})
	bb := dialSSE(t, srv, dialOpts{user: "u2", rooms: []string{"b"}})
	ab := dialWS(t, srv, dialOpts{user: "u3", rooms: []string{"a", "b"}})
	// Room names that would collide if mapped naively into subjects.
	prefix := dialWS(t, srv, dialOpts{user: "u4", rooms: []string{"a:1", "A"}})

	for i := range 5 {
		_ = b.Publish(ctx, "a", msg(fmt.Sprint("a", i)))
		_ = b.Publish(ctx, "b", msg(fmt.Sprint("b", i)))
	}
	for _, c := range []client{a, bb, ab, prefix} {
		sendMarker(t, b, c, "end")
	}
	var wantA, wantB, wantAB []string
	for i := range 5 {
		wantA = append(wantA, fmt.Sprint("message:a:a", i))
		wantB = append(wantB, fmt.Sprint("message:b:b", i))
		wantAB = append(wantAB, fmt.Sprint("message:a:a", i), fmt.Sprint("message:b:b", i))
	}
	for _, tc := range []struct {
		name string
		c    client
		want []string
	}{{"a", a, wantA}, {"b", bb, wantB}, {"a+b", ab, wantAB}, {"a:1+A", prefix, nil}} {
		if got := texts(collect(t, tc.c, "end")); !slices.Equal(got, tc.want) {
			t.Errorf("%s received %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSendToUserReachesEveryConnectionOfThatUserOnly(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	alice1 := dialWS(t, srv, dialOpts{user: "alice"})
	alice2 := dialSSE(t, srv, dialOpts{user: "alice"})
	alice3 := dialWS(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	bob := dialWS(t, srv, dialOpts{user: "bob", rooms: []string{"lobby"}})
	anon := dialWS(t, srv, dialOpts{})
	// A user id that is a prefix or a NATS wildcard of another must not match it.
	wild := dialWS(t, srv, dialOpts{user: ">"})
	star := dialWS(t, srv, dialOpts{user: "*"})
	dotted := dialWS(t, srv, dialOpts{user: "alice.smith"})

	if err := b.SendToUser(ctx, "alice", msg("for alice")); err != nil {
		t.Fatal(err)
	}
	_ = b.SendToUser(ctx, ">", msg("for >"))
	for _, c := range []client{alice1, alice2, alice3, bob, anon, wild, star, dotted} {
		sendMarker(t, b, c, "end")
	}
	for name, tc := range map[string]struct {
		c    client
		want []string
	}{
		"alice ws": {alice1, []string{"direct::for alice"}}, "alice sse": {alice2, []string{"direct::for alice"}},
		"alice ws 2": {alice3, []string{"direct::for alice"}}, "bob": {bob, nil}, "anonymous": {anon, nil},
		">": {wild, []string{"direct::for >"}}, "*": {star, nil}, "alice.smith": {dotted, nil},
	} {
		got := collect(t, tc.c, "end")
		if !slices.Equal(texts(got), tc.want) {
			t.Errorf("%s received %q, want %q", name, texts(got), tc.want)
		}
		for _, f := range got {
			if f.To != "user" {
				t.Errorf("%s: direct frame to = %q, want user", name, f.To)
			}
		}
	}
}

func TestSendToConnReachesExactlyOneConnection(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c1 := dialWS(t, srv, dialOpts{user: "alice"})
	c2 := dialWS(t, srv, dialOpts{user: "alice"})
	c3 := dialSSE(t, srv, dialOpts{user: "alice"})
	if c1.ConnID() == c2.ConnID() || c2.ConnID() == c3.ConnID() {
		t.Fatal("connection ids are not unique")
	}
	if err := b.SendToConn(ctx, c3.ConnID(), msg("only c3")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []client{c1, c2, c3} {
		sendMarker(t, b, c, "end")
	}
	for i, c := range []client{c1, c2} {
		if got := collect(t, c, "end"); len(got) != 0 {
			t.Errorf("c%d received %q", i+1, texts(got))
		}
	}
	got := collect(t, c3, "end")
	if len(got) != 1 || got[0].Text() != "only c3" || got[0].To != "conn" {
		t.Fatalf("c3 received %+v", got)
	}
	for _, bad := range []string{"", "x", ">", "a.*", "a.b.c", "a.>", strings.Repeat("a", 100) + ".1"} {
		if err := b.SendToConn(ctx, bad, msg("x")); !errors.Is(err, ErrInvalidConnID) {
			t.Errorf("SendToConn(%q) = %v, want ErrInvalidConnID", bad, err)
		}
	}
}
