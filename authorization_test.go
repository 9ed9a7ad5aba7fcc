package pubsub_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	. "github.com/roomcast/pubsub"
)

// The user and the host's own context values reach the authorization hooks.
func TestIdentityFromHostMiddlewareReachesHooks(t *testing.T) {
	type call struct{ action, user, role, room string }
	var mu sync.Mutex
	var calls []call
	hook := func(action string) AuthorizeFunc {
		return func(ctx context.Context, user, room string) error {
			role, _ := ctx.Value(roleKey{}).(string)
			mu.Lock()
			calls = append(calls, call{action, user, role, room})
			mu.Unlock()
			if UserFromContext(ctx) != user {
				return errors.New("context and user disagree")
			}
			if strings.HasPrefix(room, "admin") && role != "admin" {
				return errors.New("admins only")
			}
			return nil
		}
	}
	b := newBroker(t, WithSubscribeAuth(hook("subscribe")), WithClientPublish(hook("publish")))
	srv := serve(t, b, nil)
	admin := dialWS(t, srv, dialOpts{user: "root", role: "admin", rooms: []string{"admin-room"}})
	// The answer and the message itself, in either order (PROTOCOL.md §4).
	admin.send(t, map[string]any{"type": "publish", "room": "admin-room", "data": map[string]string{"text": "hello"}, "ref": "p"})
	seen := map[string]bool{}
	for _, f := range []frame{admin.next(t), admin.next(t)} {
		switch {
		case f.Type == "published" && f.ID != "" && !seen["published"]:
		case f.Type == "message" && f.From == "root" && f.Text() == "hello" && !seen["message"]:
		default:
			t.Fatalf("publish answered %+v, want one published and the message", f)
		}
		seen[f.Type] = true
	}
	user := dialWS(t, srv, dialOpts{user: "eve", role: "user"})
	if f := user.request(t, map[string]any{"type": "subscribe", "room": "admin-room"}); f.Type != "error" || f.ErrorCode() != "forbidden" || f.Room != "admin-room" {
		t.Fatalf("denied subscribe answer = %+v", f)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []call{{"subscribe", "root", "admin", "admin-room"}, {"publish", "root", "admin", "admin-room"}, {"subscribe", "eve", "user", "admin-room"}}
	if !slices.Equal(calls, want) {
		t.Fatalf("hook calls = %+v, want %+v", calls, want)
	}
}

func TestDeniedSubscribeIsReportedNotDropped(t *testing.T) {
	deny := func(ctx context.Context, user, room string) error {
		if room == "secret" {
			return errors.New("no")
		}
		return nil
	}
	b := newBroker(t, WithSubscribeAuth(deny))
	srv := serve(t, b, nil)

	// WebSocket: an error frame per denied room; the allowed rooms still work.
	c, _, err := dialWSErr(srv, dialOpts{user: "u", rooms: []string{"secret", "open"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Conn.CloseNow()
	c.Welcome = c.next(t)
	got := []string{"welcome::"}
	for range 2 {
		f := c.next(t)
		got = append(got, f.Type+":"+f.ErrorCode()+":"+f.Room)
	}
	if want := []string{"welcome::", "error:forbidden:secret", "subscribed::open"}; !slices.Equal(got, want) {
		t.Fatalf("frames = %q, want %q", got, want)
	}
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "secret", "ref": 2}); f.ErrorCode() != "forbidden" || string(f.Ref) != "2" {
		t.Fatalf("subscribe frame answer = %+v", f)
	}
	// SSE: the request is refused before the stream starts.
	if _, resp, err := dialSSEErr(srv, dialOpts{user: "u", rooms: []string{"open", "secret"}}); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("SSE with a denied room: %v", err)
	}
	_ = b.Publish(ctx, "secret", msg("leak"))
	_ = b.Publish(ctx, "open", msg("ok"))
	expectOnly(t, b, c, "message:open:ok")
}

func TestClientPublish(t *testing.T) {
	t.Run("disabled by default", func(t *testing.T) {
		b := newBroker(t)
		srv := serve(t, b, nil)
		c := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
		f := c.request(t, map[string]any{"type": "publish", "room": "r", "data": 1, "ref": 1})
		if f.Type != "error" || f.ErrorCode() != "forbidden" {
			t.Fatalf("answer = %+v", f)
		}
		sendMarker(t, b, c, "end")
		if got := collect(t, c, "end"); len(got) != 0 {
			t.Fatalf("a refused publish was delivered: %q", texts(got))
		}
	})
	t.Run("hook per room", func(t *testing.T) {
		b := newBroker(t, WithClientPublish(func(ctx context.Context, user, room string) error {
			if room == "readonly" {
				return errors.New("read only")
			}
			return nil
		}))
		srv := serve(t, b, nil)
		pub := dialWS(t, srv, dialOpts{user: "writer"})
		sub := dialSSE(t, srv, dialOpts{user: "reader", rooms: []string{"readonly", "chat"}})
		if f := pub.request(t, map[string]any{"type": "publish", "room": "readonly", "data": map[string]string{"text": "x"}, "ref": "a"}); f.ErrorCode() != "forbidden" {
			t.Fatalf("answer = %+v", f)
		}
		// Without a ref, a successful publish is not acknowledged.
		pub.send(t, map[string]any{"type": "publish", "room": "chat", "data": map[string]string{"text": "hi"}})
		if f := pub.request(t, map[string]any{"type": "publish", "room": "chat", "data": map[string]string{"text": "again"}, "ref": "b"}); f.Type != "published" || f.Room != "chat" {
			t.Fatalf("answer = %+v", f)
		}
		for _, want := range []string{"hi", "again"} {
			if f := sub.next(t); f.Room != "chat" || f.Text() != want || f.From != "writer" {
				t.Fatalf("subscriber got %+v, want %q from writer", f, want)
			}
		}
		sendMarker(t, b, sub, "end")
		if got := collect(t, sub, "end"); len(got) != 0 {
			t.Fatalf("subscriber got more: %q", texts(got))
		}
	})
}

func TestCrossOriginIsRefused(t *testing.T) {
	b := newBroker(t, WithOriginPatterns("trusted.example"))
	srv := serve(t, b, nil)
	for _, origin := range []string{"http://evil.example", "null", "http://trusted.example.evil.com"} {
		if _, resp, err := dialWSErr(srv, dialOpts{origin: origin}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("WebSocket from %s: err %v", origin, err)
		}
		if _, resp, err := dialSSEErr(srv, dialOpts{origin: origin}); err == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("SSE from %s: err %v", origin, err)
		}
	}
	same := "http://" + strings.TrimPrefix(srv.URL, "http://")
	for _, origin := range []string{"", same, "https://trusted.example"} {
		dialWS(t, srv, dialOpts{origin: origin})
		dialSSE(t, srv, dialOpts{origin: origin})
	}
}

// The deprecated names still work, for one release.
func TestDeprecatedContextHelpers(t *testing.T) {
	ctx := WithUser(context.Background(), "alice")
	if UserFrom(ctx) != "alice" || UserFromContext(ctx) != "alice" {
		t.Fatal("WithUser and UserFromContext disagree")
	}
	if UserFromContext(context.Background()) != "" {
		t.Fatal("an anonymous context has a user")
	}
}
