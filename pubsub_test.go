package pubsub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
)

var ctx = context.Background()

func TestWebSocketSubscribeAndReceive(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	if c.welcome.User != "alice" {
		t.Fatalf("welcome user = %q", c.welcome.User)
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
		if f.Type != "message" || f.Room != "lobby" || f.text() != fmt.Sprint("hi ", i) || f.From != "" {
			t.Fatalf("message %d = %+v", i, f)
		}
		if f.ID == "" || ids[f.ID] {
			t.Fatalf("message id %q missing or repeated", f.ID)
		}
		ids[f.ID] = true
	}
	if f := c.next(t); f.Room != "news" || f.text() != "pretty" {
		t.Fatalf("pretty-printed JSON message = %+v", f)
	}

	// Unsubscribe: nothing more from news.
	if f := c.request(t, map[string]any{"type": "unsubscribe", "room": "news", "ref": "u"}); f.Type != "unsubscribed" || f.Room != "news" {
		t.Fatalf("unsubscribe answer = %+v", f)
	}
	_ = b.Publish(ctx, "news", msg("after unsubscribe"))
	_ = b.Publish(ctx, "lobby", msg("still here"))
	sendMarker(t, b, c, "end")
	if got := texts(collect(t, c, "end")); !slices.Equal(got, []string{"message:lobby:still here"}) {
		t.Fatalf("after unsubscribe got %q", got)
	}
	if f := c.request(t, map[string]any{"type": "ping", "ref": 1}); f.Type != "pong" || string(f.Ref) != "1" {
		t.Fatalf("ping answer = %+v", f)
	}
}

func TestSSESubscribeAndReceive(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c := dialSSE(t, srv, dialOpts{user: "bob", rooms: []string{"lobby", "news"}})
	if c.welcome.User != "bob" || c.welcome.Conn == "" {
		t.Fatalf("welcome = %+v", c.welcome)
	}
	_ = b.Publish(ctx, "lobby", msg("one"))
	_ = b.Publish(ctx, "news", msg("two"))
	_ = b.SendToUser(ctx, "bob", msg("three"))
	want := []string{"message:lobby:one", "message:news:two", "direct::three"}
	for i, w := range want {
		f := c.next(t)
		if got := f.Type + ":" + f.Room + ":" + f.text(); got != w {
			t.Fatalf("event %d = %q, want %q", i, got, w)
		}
		// The id is in the frame; the SSE id field is kept for store
		// positions (the resume cursor), which plain rooms do not have.
		if f.ID == "" || f.SSEID != "" {
			t.Fatalf("event %d: SSE id %q, frame id %q", i, f.SSEID, f.ID)
		}
	}
	if !strings.HasPrefix(c.rawText(), "retry: 2000\n") {
		t.Fatalf("stream does not start with retry: %q", c.rawText()[:20])
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
	if c1.connID() == c2.connID() || c2.connID() == c3.connID() {
		t.Fatal("connection ids are not unique")
	}
	if err := b.SendToConn(ctx, c3.connID(), msg("only c3")); err != nil {
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
	if len(got) != 1 || got[0].text() != "only c3" || got[0].To != "conn" {
		t.Fatalf("c3 received %+v", got)
	}
	for _, bad := range []string{"", "x", ">", "a.*", "a.b.c", "a.>", strings.Repeat("a", 100) + ".1"} {
		if err := b.SendToConn(ctx, bad, msg("x")); !errors.Is(err, ErrInvalidConnID) {
			t.Errorf("SendToConn(%q) = %v, want ErrInvalidConnID", bad, err)
		}
	}
}

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
	if f := admin.request(t, map[string]any{"type": "publish", "room": "admin-room", "data": map[string]string{"text": "hello"}, "ref": "p"}); f.Type != "published" || f.ID == "" {
		t.Fatalf("publish answer = %+v", f)
	}
	if f := admin.next(t); f.Type != "message" || f.From != "root" || f.text() != "hello" {
		t.Fatalf("own publish = %+v", f)
	}
	user := dialWS(t, srv, dialOpts{user: "eve", role: "user"})
	if f := user.request(t, map[string]any{"type": "subscribe", "room": "admin-room"}); f.Type != "error" || f.code() != "forbidden" || f.Room != "admin-room" {
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
	defer c.c.CloseNow()
	c.welcome = c.next(t)
	got := []string{"welcome::"}
	for range 2 {
		f := c.next(t)
		got = append(got, f.Type+":"+f.code()+":"+f.Room)
	}
	if want := []string{"welcome::", "error:forbidden:secret", "subscribed::open"}; !slices.Equal(got, want) {
		t.Fatalf("frames = %q, want %q", got, want)
	}
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "secret", "ref": 2}); f.code() != "forbidden" || string(f.Ref) != "2" {
		t.Fatalf("subscribe frame answer = %+v", f)
	}
	// SSE: the request is refused before the stream starts.
	if _, resp, err := dialSSEErr(srv, dialOpts{user: "u", rooms: []string{"open", "secret"}}); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("SSE with a denied room: %v", err)
	}
	_ = b.Publish(ctx, "secret", msg("leak"))
	_ = b.Publish(ctx, "open", msg("ok"))
	sendMarker(t, b, c, "end")
	if got := texts(collect(t, c, "end")); !slices.Equal(got, []string{"message:open:ok"}) {
		t.Fatalf("received %q", got)
	}
}

func TestClientPublish(t *testing.T) {
	t.Run("disabled by default", func(t *testing.T) {
		b := newBroker(t)
		srv := serve(t, b, nil)
		c := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
		f := c.request(t, map[string]any{"type": "publish", "room": "r", "data": 1, "ref": 1})
		if f.Type != "error" || f.code() != "forbidden" {
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
		if f := pub.request(t, map[string]any{"type": "publish", "room": "readonly", "data": map[string]string{"text": "x"}, "ref": "a"}); f.code() != "forbidden" {
			t.Fatalf("answer = %+v", f)
		}
		// Without a ref, a successful publish is not acknowledged.
		pub.send(t, map[string]any{"type": "publish", "room": "chat", "data": map[string]string{"text": "hi"}})
		if f := pub.request(t, map[string]any{"type": "publish", "room": "chat", "data": map[string]string{"text": "again"}, "ref": "b"}); f.Type != "published" || f.Room != "chat" {
			t.Fatalf("answer = %+v", f)
		}
		for _, want := range []string{"hi", "again"} {
			if f := sub.next(t); f.Room != "chat" || f.text() != want || f.From != "writer" {
				t.Fatalf("subscriber got %+v, want %q from writer", f, want)
			}
		}
		sendMarker(t, b, sub, "end")
		if got := collect(t, sub, "end"); len(got) != 0 {
			t.Fatalf("subscriber got more: %q", texts(got))
		}
	})
}

var hostileRooms = []string{"", ">", "*", "a.b", "a.>", "lobby.*", "$SYS", "$SYS.>", " ", "a b", "tab\there", "new\nline",
	"nul\x00", "\xff\xfe", strings.Repeat("x", 4096), strings.Repeat("é", 65)}

func TestHostileRoomNamesAreRejectedEverywhere(t *testing.T) {
	b := newBroker(t, WithClientPublish(func(context.Context, string, string) error { return nil }))
	srv := serve(t, b, nil)
	victim := dialWS(t, srv, dialOpts{user: "victim", rooms: []string{"lobby", "a", "b", "SYS"}})
	attacker := dialWS(t, srv, dialOpts{user: "attacker"})

	for _, room := range hostileRooms {
		if err := b.Publish(ctx, room, msg("x")); !errors.Is(err, ErrInvalidRoom) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidRoom", truncate(room), err)
		}
		if _, resp, err := dialSSEErr(srv, dialOpts{rooms: []string{room}}); err == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("SSE ?room=%q: %v", truncate(room), err)
		}
		if !utf8.ValidString(room) {
			continue // a JSON frame cannot carry it: it arrives as U+FFFD
		}
		f := attacker.request(t, map[string]any{"type": "subscribe", "room": room, "ref": 1})
		if f.Type != "error" || f.code() != "invalid_room" || f.Message == "" {
			t.Errorf("subscribe %q answered %+v", truncate(room), f)
		}
		f = attacker.request(t, map[string]any{"type": "publish", "room": room, "data": 1, "ref": 1})
		if f.Type != "error" || f.code() != "invalid_room" {
			t.Errorf("publish %q answered %+v", truncate(room), f)
		}
	}
	// Rooms in a WebSocket query get the same error frames.
	qc, _, err := dialWSErr(srv, dialOpts{rooms: []string{">", "*"}})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.c.CloseNow()
	qc.welcome = qc.next(t)
	for range 2 {
		if f := qc.next(t); f.code() != "invalid_room" {
			t.Fatalf("query room answered %+v", f)
		}
	}

	for _, room := range []string{"lobby", "a", "b", "SYS"} {
		_ = b.Publish(ctx, room, msg("private "+room))
	}
	for _, c := range []client{attacker, qc} {
		sendMarker(t, b, c, "end")
		if got := collect(t, c, "end"); len(got) != 0 {
			t.Fatalf("attacker received %q", texts(got))
		}
	}
	sendMarker(t, b, victim, "end")
	if got := collect(t, victim, "end"); len(got) != 4 {
		t.Fatalf("victim received %q", texts(got))
	}
}

func TestHostileUserIDs(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	for _, u := range []string{"", "\x00", "\xff", strings.Repeat("u", 4096)} {
		if err := b.SendToUser(ctx, u, msg("x")); !errors.Is(err, ErrInvalidUser) {
			t.Errorf("SendToUser(%q) = %v", truncate(u), err)
		}
	}
	// A host that lets a hostile user id through its authentication gets a
	// 400, not a connection.
	if _, resp, err := dialWSErr(srv, dialOpts{user: strings.Repeat("u", 4096)}); err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("4 KB user id: %v", err)
	}
}

func TestMalformedFramesGetErrorsAndTheConnectionSurvives(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
	for _, tc := range []struct {
		frame, code string
	}{
		{`not json`, "bad_request"},
		{`[1,2]`, "bad_request"},
		{`{"room":"r"}`, "bad_request"},
		{`{"type":"dance"}`, "bad_request"},
		{`{"type":"subscribe","room":"r","ref":{"a":1}}`, "bad_request"},
		{`{"type":"subscribe","room":"r","ref":"` + strings.Repeat("x", 100) + `"}`, "bad_request"},
		{`{"type":"subscribe","room":5}`, "bad_request"},
		{`{"type":"send","data":1}`, "unsupported"},
	} {
		f := c.request(t, tc.frame)
		if f.Type != "error" || f.code() != tc.code {
			t.Errorf("frame %q answered %+v, want error %s", tc.frame, f, tc.code)
		}
	}
	ctx2, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	_ = c.c.Write(ctx2, websocket.MessageBinary, []byte{1, 2, 3})
	if f := c.next(t); f.code() != "unsupported" {
		t.Fatalf("binary frame answered %+v", f)
	}
	_ = b.Publish(ctx, "r", msg("still works"))
	if f := c.next(t); f.text() != "still works" {
		t.Fatalf("after malformed frames got %+v", f)
	}
}

func TestOversizedMessages(t *testing.T) {
	b := newBroker(t, WithMaxMessageSize(1024))
	srv := serve(t, b, nil)
	big := dialWS(t, srv, dialOpts{user: "big", rooms: []string{"r"}})
	other := dialWS(t, srv, dialOpts{user: "other", rooms: []string{"r"}})

	big.send(t, `{"type":"send","data":"`+strings.Repeat("x", 2000)+`"}`)
	_, err := big.nextErr(waitFor)
	if code := websocket.CloseStatus(err); code != CloseMessageTooBig {
		t.Fatalf("oversized frame: err %v, close code %d, want %d", err, code, CloseMessageTooBig)
	}
	if err := b.Publish(ctx, "r", []byte(`"`+strings.Repeat("x", 2000)+`"`)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Publish = %v", err)
	}
	for _, bad := range []string{"", "{", "hello", `{"a":1} {"b":2}`} {
		if err := b.Publish(ctx, "r", []byte(bad)); !errors.Is(err, ErrInvalidData) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidData", bad, err)
		}
	}
	_ = b.Publish(ctx, "r", msg("fine"))
	if f := other.next(t); f.text() != "fine" {
		t.Fatalf("other client got %+v", f)
	}
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

func TestNonStreamingRequestIsRejected(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	resp, err := http.Get(srv.URL + "/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}
}

// The broker takes HTTP/1.1 SSE connections over; what the host's
// middleware put in the response headers must survive that. Over HTTP/2,
// where a connection cannot be taken over, the handler streams itself.
func TestSSEKeepsHostHeadersAndWorksOverHTTP2(t *testing.T) {
	b := newBroker(t)
	mux := http.NewServeMux()
	mux.Handle("/live", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "refreshed"})
		w.Header().Set("Access-Control-Allow-Origin", "https://app.example")
		testAuth(b.Handler()).ServeHTTP(w, r)
	}))
	for _, h2 := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(mux)
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		defer srv.Close()
		c := dialSSE(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
		if want := map[bool]int{false: 1, true: 2}[h2]; c.resp.ProtoMajor != want {
			t.Fatalf("HTTP/%d, want %d", c.resp.ProtoMajor, want)
		}
		if got := c.resp.Header.Get("Set-Cookie"); !strings.Contains(got, "session=refreshed") {
			t.Errorf("HTTP/%d: Set-Cookie %q lost", c.resp.ProtoMajor, got)
		}
		if got := c.resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
			t.Errorf("HTTP/%d: CORS header %q lost", c.resp.ProtoMajor, got)
		}
		_ = b.Publish(ctx, "r", msg("over tls"))
		if f := c.next(t); f.text() != "over tls" {
			t.Fatalf("HTTP/%d: got %+v", c.resp.ProtoMajor, f)
		}
		c.close()
	}
}
