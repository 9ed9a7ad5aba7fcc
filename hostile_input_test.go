package pubsub_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

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
		if f.Type != "error" || f.ErrorCode() != "invalid_room" || f.Message == "" {
			t.Errorf("subscribe %q answered %+v", truncate(room), f)
		}
		f = attacker.request(t, map[string]any{"type": "publish", "room": room, "data": 1, "ref": 1})
		if f.Type != "error" || f.ErrorCode() != "invalid_room" {
			t.Errorf("publish %q answered %+v", truncate(room), f)
		}
	}
	// Rooms in a WebSocket query get the same error frames.
	qc, _, err := dialWSErr(srv, dialOpts{rooms: []string{">", "*"}})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Conn.CloseNow()
	qc.Welcome = qc.next(t)
	for range 2 {
		if f := qc.next(t); f.ErrorCode() != "invalid_room" {
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
		if f.Type != "error" || f.ErrorCode() != tc.code {
			t.Errorf("frame %q answered %+v, want error %s", tc.frame, f, tc.code)
		}
	}
	ctx2, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	_ = c.Conn.Write(ctx2, websocket.MessageBinary, []byte{1, 2, 3})
	if f := c.next(t); f.ErrorCode() != "unsupported" {
		t.Fatalf("binary frame answered %+v", f)
	}
	_ = b.Publish(ctx, "r", msg("still works"))
	if f := c.next(t); f.Text() != "still works" {
		t.Fatalf("after malformed frames got %+v", f)
	}
}

func TestOversizedMessages(t *testing.T) {
	b := newBroker(t, WithMaxMessageSize(1024))
	srv := serve(t, b, nil)
	big := dialWS(t, srv, dialOpts{user: "big", rooms: []string{"r"}})
	other := dialWS(t, srv, dialOpts{user: "other", rooms: []string{"r"}})

	big.send(t, `{"type":"send","data":"`+strings.Repeat("x", 2000)+`"}`)
	_, err := big.NextErr(waitFor)
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
	if f := other.next(t); f.Text() != "fine" {
		t.Fatalf("other client got %+v", f)
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

// HEAD with query rooms answers what an SSE request would, naming the room.
func TestProbeNamesTheRefusedRoom(t *testing.T) {
	b := newBroker(t, WithSubscribeAuth(func(ctx context.Context, user, room string) error {
		if room == "secret" {
			return errors.New("no")
		}
		return nil
	}))
	srv := serve(t, b, nil)
	for _, tc := range []struct {
		rooms      []string
		status     int
		code, room string
	}{
		{nil, http.StatusNoContent, "", ""},
		{[]string{"lobby"}, http.StatusNoContent, "", ""},
		{[]string{"lobby", "secret"}, http.StatusForbidden, "forbidden", "secret"},
		{[]string{"a.b"}, http.StatusBadRequest, "invalid_room", "a.b"},
	} {
		resp, err := http.Head(liveURL(srv, "http", tc.rooms))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Roomcast-Error") != tc.code || resp.Header.Get("Roomcast-Room") != tc.room {
			t.Errorf("HEAD %v: %d %q %q", tc.rooms, resp.StatusCode, resp.Header.Get("Roomcast-Error"), resp.Header.Get("Roomcast-Room"))
		}
	}
}

var hostileRooms = []string{"", ">", "*", "a.b", "a.>", "lobby.*", "$SYS", "$SYS.>", " ", "a b", "tab\there", "new\nline",
	"nul\x00", "\xff\xfe", strings.Repeat("x", 4096), strings.Repeat("é", 65)}

// Invalid UTF-8 in a WebSocket text frame fails the connection with 1007
// (RFC 6455), never maps to U+FFFD or echoes back raw; over a POST it is a
// 400 (sse_actions_test.go).
func TestInvalidUTF8FrameClosesWith1007(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	for _, frame := range []string{
		"{\"type\":\"subscribe\",\"room\":\"vault\xff\"}",
		"{\"type\":\"ping\",\"ref\":\"\xff\"}",
	} {
		c := dialWS(t, srv, dialOpts{user: "u"})
		if err := c.Send(frame); err != nil {
			t.Fatal(err)
		}
		_, err := c.NextErr(testkit.Wait)
		if websocket.CloseStatus(err) != CloseInvalidData {
			t.Errorf("%q: %v, want close 1007", frame, err)
		}
	}
	eventually(t, "the connections gone", func() bool {
		conns, _ := b.UserConns(ctx, "u")
		return len(conns) == 0
	})
	if rooms := b.Stats().Rooms; rooms != 0 {
		t.Errorf("a frame that was not UTF-8 subscribed to %d rooms", rooms)
	}
}

// A query Go's parser refuses (more than 10,000 parameters) is a 400, not
// a connection with no rooms; so is an unknown protocol version.
func TestQueryTheParserRefusesIs400(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	huge := strings.Repeat("x=1&", 10001) // not rooms: the room limit must not be what refuses it
	for name, query := range map[string]string{"10,001 parameters": huge, "a semicolon": "room=a;room=b", "protocol 2": "protocol=2"} {
		// The HEAD probe says the same, for a client that only saw its connection fail.
		req, _ := http.NewRequest(http.MethodHead, srv.URL+"/live?"+query, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := map[string]string{"protocol 2": "unsupported_protocol"}[name]
		if want == "" {
			want = "bad_request"
		}
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Roomcast-Error") != want {
			t.Errorf("HEAD with %s: %d %q, want 400 %s", name, resp.StatusCode, resp.Header.Get("Roomcast-Error"), want)
		}
		for _, scheme := range []string{"ws", "http"} {
			u := strings.Replace(srv.URL, "http", scheme, 1) + "/live?" + query
			var resp *http.Response
			var err error
			if scheme == "ws" {
				_, resp, err = testkit.DialWS(ctx, u, nil)
			} else {
				_, resp, err = testkit.DialSSE(srv.Client(), u, nil)
			}
			if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s over %s: %v %v", name, scheme, resp, err)
			}
		}
	}
	if b.Stats().WebSocketConns+b.Stats().SSEConns != 0 {
		t.Error("a connection was made")
	}
	// protocol=1 is this server's.
	c, _, err := testkit.DialWS(ctx, strings.Replace(srv.URL, "http", "ws", 1)+"/live?protocol=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Cut()
}
