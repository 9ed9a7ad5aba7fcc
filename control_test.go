package pubsub_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// expectServerFrame reads c's next frame and checks it is typ for room,
// made by the server.
func expectServerFrame(t *testing.T, c client, typ, room string) {
	t.Helper()
	f := testkit.Next(t, c)
	if f.Type != typ || f.Room != room || f.By != "server" {
		t.Fatalf("got %+v, want %s %s by server", f, typ, room)
	}
}

// expectClose reads until c's connection ends and returns its close code
// and reason: a WebSocket close frame, or an SSE close event.
func expectClose(t *testing.T, c client) (int, string) {
	t.Helper()
	for {
		f, err := c.NextErr(testkit.Wait)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return int(ce.Code), ce.Reason
			}
			t.Fatalf("read: %v", err)
		}
		if f.Type == "close" {
			code := 0
			for _, d := range f.ErrorCode() {
				code = code*10 + int(d-'0')
			}
			return code, f.Reason
		}
	}
}

// Every operation, made on node 0, reaches connections on nodes 1 and 2,
// over WebSocket and SSE, and only the connections it names.
func TestControlAcrossInstances(t *testing.T) {
	bs := newCluster(t, 3)
	s0, s1, s2 := serve(t, bs[0], nil), serve(t, bs[1], nil), serve(t, bs[2], nil)
	aliceWS := dialWS(t, s1, dialOpts{user: "alice"})
	aliceSSE := dialSSE(t, s2, dialOpts{user: "alice"})
	bob := dialWS(t, s2, dialOpts{user: "bob"})
	carol := dialWS(t, s0, dialOpts{user: "carol", rooms: []string{"game"}})
	eventually(t, "three instances know each other", func() bool { return Instances(bs[0]) == 3 })

	// Move alice into "game", everywhere.
	n, err := bs[0].SubscribeUser(ctx, "alice", "game")
	if err != nil || n != 2 {
		t.Fatalf("SubscribeUser = %d, %v; want 2 connections", n, err)
	}
	expectServerFrame(t, aliceWS, "subscribed", "game")
	expectServerFrame(t, aliceSSE, "subscribed", "game")
	awaitInterest(t, bs[0], Subjects(bs[0]).Room("game"), 3)
	_ = bs[0].Publish(ctx, "game", msg("one"))
	for _, c := range []client{aliceWS, aliceSSE, bob, carol} {
		sendMarker(t, bs[0], c, "end")
	}
	expectUntil(t, "end", map[string]receipt{
		"alice on node 1 (WebSocket)": {aliceWS, "message:game:one"},
		"alice on node 2 (SSE)":       {aliceSSE, "message:game:one"},
		"bob, not moved":              {bob, ""},
		"carol, there already":        {carol, "message:game:one"},
	})

	// List alice's connections from node 0.
	conns, err := bs[0].UserConns(ctx, "alice")
	if err != nil || len(conns) != 2 {
		t.Fatalf("UserConns = %+v, %v", conns, err)
	}
	for _, c := range conns {
		want := map[string]string{aliceWS.ConnID(): "websocket", aliceSSE.ConnID(): "sse"}[c.ID]
		if c.Transport != want || c.User != "alice" || !slices.Equal(c.Rooms, []string{"game"}) || c.Since.IsZero() ||
			!strings.HasPrefix(c.ID, c.Instance+".") || c.Instance == InstanceID(bs[0]) {
			t.Errorf("conn %+v", c)
		}
	}
	if conns, err := bs[0].UserConns(ctx, "nobody"); err != nil || len(conns) != 0 {
		t.Errorf("UserConns(nobody) = %+v, %v", conns, err)
	}

	// Take alice out again: nothing more of the room reaches her.
	if n, err := bs[0].UnsubscribeUser(ctx, "alice", "game"); err != nil || n != 2 {
		t.Fatalf("UnsubscribeUser = %d, %v", n, err)
	}
	expectServerFrame(t, aliceWS, "unsubscribed", "game")
	expectServerFrame(t, aliceSSE, "unsubscribed", "game")
	if n, err := bs[0].UnsubscribeUser(ctx, "alice", "game"); err != nil || n != 0 {
		t.Fatalf("a second UnsubscribeUser = %d, %v; want 0", n, err)
	}

	// One connection by id, on another instance.
	game := Subjects(bs[0]).Room("game")
	eventually(t, "only carol's interest left in game", func() bool {
		return EmbeddedServer(bs[0]).NATS().GlobalAccount().Interest(game) == 1
	})
	if err := bs[0].SubscribeConn(ctx, bob.ConnID(), "game"); err != nil {
		t.Fatal(err)
	}
	expectServerFrame(t, bob, "subscribed", "game")
	awaitInterest(t, bs[0], game, 2)
	_ = bs[0].Publish(ctx, "game", msg("two"))
	for _, c := range []client{aliceWS, aliceSSE, bob} {
		sendMarker(t, bs[0], c, "end")
	}
	expectUntil(t, "end", map[string]receipt{
		"alice (WebSocket), taken out": {aliceWS, ""},
		"alice (SSE), taken out":       {aliceSSE, ""},
		"bob, moved by id":             {bob, "message:game:two"},
	})
	if err := bs[1].UnsubscribeConn(ctx, bob.ConnID(), "game"); err != nil {
		t.Fatal(err)
	}
	expectServerFrame(t, bob, "unsubscribed", "game")

	// Kick alice everywhere: 4003 with the reason, on both transports.
	if n, err := bs[0].DisconnectUser(ctx, "alice", Disconnect{Reason: "kicked by a moderator"}); err != nil || n != 2 {
		t.Fatalf("DisconnectUser = %d, %v", n, err)
	}
	for name, c := range map[string]client{"WebSocket": aliceWS, "SSE": aliceSSE} {
		if code, reason := expectClose(t, c); code != CloseDisconnected || reason != "kicked by a moderator" {
			t.Errorf("alice's %s closed with %d %q", name, code, reason)
		}
	}
	eventually(t, "alice gone everywhere", func() bool {
		conns, err := bs[0].UserConns(ctx, "alice")
		return err == nil && len(conns) == 0
	})

	// "Come back later": 4004.
	if err := bs[0].DisconnectConn(ctx, bob.ConnID(), Disconnect{Reason: "rebalancing", Reconnect: true}); err != nil {
		t.Fatal(err)
	}
	if code, reason := expectClose(t, bob); code != CloseReconnectLater || reason != "rebalancing" {
		t.Errorf("bob closed with %d %q", code, reason)
	}
	// Carol, untouched, still gets the room.
	_ = bs[0].Publish(ctx, "game", msg("three"))
	sendMarker(t, bs[0], carol, "end")
	expectUntil(t, "end", map[string]receipt{"carol": {carol, "message:game:two,message:game:three"}})

	// Gone, known to be: its instance says so; an instance nobody runs.
	eventually(t, "bob unregistered", func() bool {
		return errors.Is(bs[0].DisconnectConn(ctx, bob.ConnID(), Disconnect{}), ErrNoSuchConn)
	})
	if err := bs[0].SubscribeConn(ctx, "ZZZZZZZZZZ.1", "game"); !errors.Is(err, ErrNoSuchConn) {
		t.Errorf("an id of no instance: %v, want ErrNoSuchConn", err)
	}
}

// Bad arguments are named errors, before anything is sent.
func TestControlRefusesBadInput(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"hostile conn id", b.SubscribeConn(ctx, "a.b.>", "r"), ErrInvalidConnID},
		{"empty conn id", b.DisconnectConn(ctx, "", Disconnect{}), ErrInvalidConnID},
		{"invalid room", b.SubscribeConn(ctx, c.ConnID(), "a.b"), ErrInvalidRoom},
		{"invalid UTF-8 room", b.UnsubscribeConn(ctx, c.ConnID(), "r\xff"), ErrInvalidRoom},
		{"reason too long", b.DisconnectConn(ctx, c.ConnID(), Disconnect{Reason: strings.Repeat("x", 124)}), ErrInvalidReason},
		{"reason not UTF-8", b.DisconnectConn(ctx, c.ConnID(), Disconnect{Reason: "\xff"}), ErrInvalidReason},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if _, err := b.SubscribeUser(ctx, "", "r"); !errors.Is(err, ErrInvalidUser) {
		t.Errorf("empty user: %v", err)
	}
	if _, err := b.DisconnectUser(ctx, "u\xff", Disconnect{}); !errors.Is(err, ErrInvalidUser) {
		t.Errorf("invalid user: %v", err)
	}
	// Nothing happened to the connection.
	sendMarker(t, b, c, "end")
	expectUntil(t, "end", map[string]receipt{"u": {c, ""}})
	if conns, err := b.UserConns(ctx, "u"); err != nil || len(conns) != 1 || len(conns[0].Rooms) != 0 {
		t.Errorf("after refused operations: %+v, %v", conns, err)
	}
}

// A subscribe racing a disconnect leaves nothing half-made: the connection
// is in no topic once it is gone, and the server-made subscription is
// either acknowledged to the client before the close and reported done, or
// reported ErrNoSuchConn and never acknowledged.
func TestControlSubscribeRacingDisconnect(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	for i := range 50 {
		c := dialWS(t, srv, dialOpts{user: "racer"})
		var wg sync.WaitGroup
		var subErr, discErr error
		wg.Go(func() { subErr = b.SubscribeConn(ctx, c.ConnID(), "race") })
		wg.Go(func() { discErr = b.DisconnectConn(ctx, c.ConnID(), Disconnect{}) })
		wg.Wait()
		if discErr != nil {
			t.Fatalf("round %d: DisconnectConn: %v", i, discErr)
		}
		acked := false
		for {
			f, err := c.NextErr(testkit.Wait)
			if err != nil {
				if websocket.CloseStatus(err) != CloseDisconnected {
					t.Fatalf("round %d: closed with %v", i, err)
				}
				break
			}
			acked = acked || (f.Type == "subscribed" && f.By == "server")
		}
		if (subErr == nil) != acked {
			t.Fatalf("round %d: SubscribeConn = %v but the client was told: %v", i, subErr, acked)
		}
		if subErr != nil && !errors.Is(subErr, ErrNoSuchConn) {
			t.Fatalf("round %d: SubscribeConn = %v, want nil or ErrNoSuchConn", i, subErr)
		}
		c.Cut()
	}
	eventually(t, "no room left with a subscriber", func() bool {
		st := b.Stats()
		return st.Rooms == 0 && st.WebSocketConns == 0
	})
}

// A server-made unsubscribe racing the client's own unsubscribe and
// subscribe: the last frame the client gets about the room tells the
// truth (the server's membership), so a client that follows the frames,
// as client.js does, never believes it is out of a room it is in.
func TestControlUnsubscribeRacingClientSubscribe(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
	for i := range 200 {
		var wg sync.WaitGroup
		wg.Go(func() {
			_ = c.Send(map[string]any{"type": "unsubscribe", "room": "r"})
			_ = c.Send(map[string]any{"type": "subscribe", "room": "r"})
		})
		wg.Go(func() { _ = b.UnsubscribeConn(ctx, c.ConnID(), "r") })
		wg.Wait()
		_ = c.Send(map[string]any{"type": "ping", "ref": i})
		in := false
		for {
			f := testkit.Next(t, c)
			if f.Type == "pong" {
				break
			}
			switch f.Type {
			case "subscribed":
				in = true
			case "unsubscribed":
				in = false
			}
		}
		conns, err := b.UserConns(ctx, "u")
		if err != nil || len(conns) != 1 {
			t.Fatal(conns, err)
		}
		if truth := slices.Contains(conns[0].Rooms, "r"); truth != in {
			t.Fatalf("round %d: the client was last told in=%v, the server has in=%v", i, in, truth)
		}
		if !in { // back in for the next round
			_ = c.Send(map[string]any{"type": "subscribe", "room": "r"})
			testkit.Next(t, c)
		}
	}
}

// Operations wait for every instance they know, within ControlWait.
func TestControlByUserIsBounded(t *testing.T) {
	b := newBroker(t)
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	time.Sleep(time.Millisecond)
	if _, err := b.UserConns(short, "u"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an expired context: %v", err)
	}
}
