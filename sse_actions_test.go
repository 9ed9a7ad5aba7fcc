package pubsub_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// nextOf reads c until a frame of type typ and returns it.
func nextOf(t *testing.T, c client, typ string) testkit.Frame {
	t.Helper()
	for {
		if f := testkit.Next(t, c); f.Type == typ {
			return f
		}
	}
}

// An SSE client does all a WebSocket client does, by POSTing its frames to
// the same path for its connection; the answers come on its stream.
func TestSSEClientActsByPost(t *testing.T) {
	b, _ := callBroker(t, WithClientPublish(func(context.Context, string, string) error { return nil }),
		WithHistory("h:*", History{Messages: 10}))
	srv := serve(t, b, nil)
	alice := dialSSE(t, srv, dialOpts{user: "alice"})
	url := srv.URL + "/live"
	post := func(frame map[string]any) {
		t.Helper()
		frame["conn"] = alice.ConnID()
		if resp := postFrame(t, url, "alice", frame); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST %v: %s %s", frame, resp.Status, resp.Header.Get("Roomcast-Error"))
		}
	}

	post(map[string]any{"type": "subscribe", "room": "h:1", "ref": 1})
	if f := nextOf(t, alice, "subscribed"); f.Room != "h:1" || string(f.Ref) != "1" {
		t.Fatalf("got %+v", f)
	}
	post(map[string]any{"type": "publish", "room": "h:1", "data": map[string]string{"text": "from alice"}, "ref": 2})
	var published, message bool
	for !published || !message {
		switch f := testkit.Next(t, alice); f.Type {
		case "published":
			published = string(f.Ref) == "2" && f.ID != ""
		case "message":
			message = f.Text() == "from alice" && f.From == "alice"
		}
	}
	post(map[string]any{"type": "history", "room": "h:1", "ref": 3})
	if f := nextOf(t, alice, "history"); string(f.Ref) != "3" {
		t.Fatalf("got %+v", f)
	}
	post(map[string]any{"type": "call", "method": "echo", "data": "hi", "ref": 4})
	if f := answerTo(t, alice, 4); f.Type != "reply" || !strings.Contains(string(f.Data), `"user":"alice"`) {
		t.Fatalf("call: %+v %s", f, f.Data)
	}
	post(map[string]any{"type": "call", "method": "missing", "ref": 5})
	if f := answerTo(t, alice, 5); f.ErrorCode() != "no_handler" {
		t.Fatalf("call: %+v", f)
	}
	post(map[string]any{"type": "nonsense", "ref": 6})
	if f := nextOf(t, alice, "error"); f.ErrorCode() != "bad_request" || string(f.Ref) != "6" {
		t.Fatalf("got %+v", f)
	}
	post(map[string]any{"type": "unsubscribe", "room": "h:1", "ref": 7})
	nextOf(t, alice, "unsubscribed")
	_ = b.Publish(ctx, "h:1", msg("after leaving"))
	expectOnly(t, b, alice)
}

// A POST for another user's connection is refused (403) and changes
// nothing; so are anonymous, cross-site and malformed ones.
func TestSSEPostRefusals(t *testing.T) {
	b, _ := callBroker(t)
	srv := serve(t, b, nil)
	alice := dialSSE(t, srv, dialOpts{user: "alice"})
	url := srv.URL + "/live"
	for _, tc := range []struct {
		name   string
		user   string
		frame  map[string]any
		status int
		code   string
	}{
		{"another user's connection", "mallory", map[string]any{"type": "subscribe", "room": "r", "conn": alice.ConnID()}, http.StatusForbidden, "forbidden"},
		{"another user's call", "mallory", map[string]any{"type": "call", "method": "echo", "conn": alice.ConnID()}, http.StatusForbidden, "forbidden"},
		{"anonymous", "", map[string]any{"type": "subscribe", "room": "r", "conn": alice.ConnID()}, http.StatusForbidden, "forbidden"},
		{"no connection", "alice", map[string]any{"type": "subscribe", "room": "r"}, http.StatusBadRequest, "invalid_conn"},
		{"a hostile id", "alice", map[string]any{"type": "subscribe", "room": "r", "conn": "a.*"}, http.StatusBadRequest, "invalid_conn"},
		{"a gone connection", "alice", map[string]any{"type": "subscribe", "room": "r", "conn": InstanceID(b) + ".ffff"}, http.StatusNotFound, "no_such_conn"},
		{"no type", "alice", map[string]any{"room": "r", "conn": alice.ConnID()}, http.StatusBadRequest, "bad_request"},
	} {
		if resp := postFrame(t, url, tc.user, tc.frame); resp.StatusCode != tc.status || resp.Header.Get("Roomcast-Error") != tc.code {
			t.Errorf("%s: %s %q, want %d %s", tc.name, resp.Status, resp.Header.Get("Roomcast-Error"), tc.status, tc.code)
		}
	}
	for _, tc := range []struct{ name, contentType, origin, body string }{
		{"a form", "application/x-www-form-urlencoded", "", `{"type":"ping","conn":"` + alice.ConnID() + `"}`},
		{"a foreign page", "application/json", "https://evil.example", `{"type":"ping","conn":"` + alice.ConnID() + `"}`},
		{"not JSON", "application/json", "", `ping`},
		{"invalid UTF-8", "application/json", "", "{\"type\":\"subscribe\",\"room\":\"r\xff\",\"conn\":\"" + alice.ConnID() + "\"}"},
	} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.contentType)
		req.Header.Set("X-User", "alice")
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("%s: %s", tc.name, resp.Status)
		}
	}
	// Nothing reached alice's stream, and she is in no room.
	expectOnly(t, b, alice)
	if conns, _ := b.UserConns(ctx, "alice"); len(conns) != 1 || len(conns[0].Rooms) != 0 {
		t.Fatalf("alice after refused POSTs: %+v", conns)
	}
}

// The POST may land on any instance: the frame is handled where the
// connection is.
func TestSSEPostAcrossInstances(t *testing.T) {
	bs := newCluster(t, 2, WithCall("where", func(_ context.Context, c Call) ([]byte, error) {
		return []byte(`"` + c.Conn.ID() + `"`), nil
	}))
	s0, s1 := serve(t, bs[0], nil), serve(t, bs[1], nil)
	alice := dialSSE(t, s1, dialOpts{user: "alice"})
	post := func(frame map[string]any) {
		t.Helper()
		frame["conn"] = alice.ConnID()
		if resp := postFrame(t, s0.URL+"/live", "alice", frame); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST: %s", resp.Status)
		}
	}
	post(map[string]any{"type": "subscribe", "room": "far", "ref": 1})
	nextOf(t, alice, "subscribed")
	post(map[string]any{"type": "call", "method": "where", "ref": 2})
	if f := answerTo(t, alice, 2); string(f.Data) != `"`+alice.ConnID()+`"` {
		t.Fatalf("call: %+v", f)
	}
	awaitInterest(t, bs[0], Subjects(bs[0]).Room("far"), 1)
	_ = bs[0].Publish(ctx, "far", msg("to the far room"))
	if f := nextOf(t, alice, "message"); f.Text() != "to the far room" {
		t.Fatalf("got %+v", f)
	}
	if conns, _ := bs[1].UserConns(ctx, "alice"); len(conns) != 1 || !slices.Equal(conns[0].Rooms, []string{"far"}) {
		t.Fatalf("%+v", conns)
	}
}

// One POSTed frame at a time per connection: a second one while the first
// is being handled is refused (429), and the first goes on.
func TestSSEPostOneAtATime(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	b := newBroker(t, WithSubscribeAuth(func(_ context.Context, _, room string) error {
		if room == "slow" {
			close(entered)
			<-release
		}
		return nil
	}))
	srv := serve(t, b, nil)
	alice := dialSSE(t, srv, dialOpts{user: "alice"})
	first := make(chan int, 1)
	go func() {
		first <- postFrame(t, srv.URL+"/live", "alice", map[string]any{"type": "subscribe", "room": "slow", "conn": alice.ConnID()}).StatusCode
	}()
	select {
	case <-entered:
	case <-time.After(testkit.Wait):
		t.Fatal("the first frame never reached the hook")
	}
	resp := postFrame(t, srv.URL+"/live", "alice", map[string]any{"type": "subscribe", "room": "fast", "conn": alice.ConnID()})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Roomcast-Error") != "busy" {
		t.Errorf("a second frame meanwhile: %s %q", resp.Status, resp.Header.Get("Roomcast-Error"))
	}
	close(release)
	if code := <-first; code != http.StatusAccepted {
		t.Fatalf("the first: %d", code)
	}
	if f := nextOf(t, alice, "subscribed"); f.Room != "slow" {
		t.Fatalf("got %+v", f)
	}
	if resp := postFrame(t, srv.URL+"/live", "alice", map[string]any{"type": "subscribe", "room": "fast", "conn": alice.ConnID()}); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("after it: %s", resp.Status)
	}
}
