package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/client"
	"github.com/roomcast/pubsub/examples/internal/demoauth"
)

// wsReader reads frames from a chat WebSocket, several per message.
type wsReader struct {
	t       *testing.T
	c       *websocket.Conn
	pending []string
}

func dialChat(t *testing.T, srv *httptest.Server, c *http.Client, query string) *wsReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+srv.URL[4:]+"/live"+query, &websocket.DialOptions{HTTPClient: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return &wsReader{t: t, c: ws}
}

type modFrame struct {
	Type, Room, By, Conn, Reason, Message string
	Code                                  json.RawMessage
	Expires                               int64
	Data                                  chatMessage
	Raw                                   json.RawMessage `json:"-"` // a reply's data
}

func (r *wsReader) next() (modFrame, error) {
	if len(r.pending) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, p, err := r.c.Read(ctx)
		if err != nil {
			return modFrame{}, err
		}
		r.pending = strings.Split(string(p), "\n")
	}
	var f modFrame
	_ = json.Unmarshal([]byte(r.pending[0]), &f)
	if f.Type == "reply" {
		var raw struct{ Data json.RawMessage }
		_ = json.Unmarshal([]byte(r.pending[0]), &raw)
		f.Raw = raw.Data
	}
	r.pending = r.pending[1:]
	return f, nil
}

func (r *wsReader) expect(typ string) modFrame {
	r.t.Helper()
	f, err := r.next()
	if err != nil || f.Type != typ {
		r.t.Fatalf("got %+v, %v; want %s", f, err, typ)
	}
	return f
}

func call(t *testing.T, c *http.Client, method, url string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// The moderator moves a user into a room and out of it, and kicks them,
// through the chat's REST routes; nobody else may.
func TestChatModeration(t *testing.T) {
	srv := newChat(t)
	admin, alice, bob := login(t, srv, demoauth.OperatorName), login(t, srv, "alice"), login(t, srv, "bob")
	bobWS := dialChat(t, srv, bob, "?room=lobby")
	welcome := bobWS.expect("welcome")
	bobWS.expect("subscribed")

	for _, r := range []struct{ method, path string }{
		{"POST", "/api/users/bob/disconnect"},
		{"GET", "/api/users/bob/conns"},
		{"POST", "/api/conns/" + welcome.Conn + "/rooms/den"},
		{"DELETE", "/api/conns/" + welcome.Conn + "/rooms/den"},
	} {
		if code, _ := call(t, alice, r.method, srv.URL+r.path); code != http.StatusForbidden {
			t.Errorf("alice %s %s: %d, want 403", r.method, r.path, code)
		}
	}
	if code, body := call(t, admin, "GET", srv.URL+"/api/users/bob/conns"); code != http.StatusOK || !strings.Contains(string(must(json.Marshal(body))), welcome.Conn) {
		t.Fatalf("conns: %d %v", code, body)
	}
	if code, body := call(t, admin, "POST", srv.URL+"/api/conns/"+welcome.Conn+"/rooms/den"); code != http.StatusOK {
		t.Fatalf("move: %d %v", code, body)
	}
	if f := bobWS.expect("subscribed"); f.Room != "den" || f.By != "server" {
		t.Fatalf("got %+v", f)
	}
	if code := post(t, alice, srv.URL+"/api/rooms/den/messages", "welcome to the den"); code != http.StatusAccepted {
		t.Fatal(code)
	}
	if f := bobWS.expect("message"); f.Room != "den" || f.Data.Text != "welcome to the den" {
		t.Fatalf("got %+v", f)
	}
	if code, _ := call(t, admin, "DELETE", srv.URL+"/api/conns/"+welcome.Conn+"/rooms/den"); code != http.StatusOK {
		t.Fatal(code)
	}
	if f := bobWS.expect("unsubscribed"); f.Room != "den" || f.By != "server" {
		t.Fatalf("got %+v", f)
	}
	for path, want := range map[string]int{
		"/api/conns/nope/rooms/den":                                             http.StatusBadRequest,
		"/api/conns/" + welcome.Conn + "/rooms/a.b":                             http.StatusBadRequest,
		"/api/conns/" + strings.Split(welcome.Conn, ".")[0] + ".ffff/rooms/den": http.StatusNotFound,
	} {
		if code, _ := call(t, admin, "POST", srv.URL+path); code != want {
			t.Errorf("POST %s: %d, want %d", path, code, want)
		}
	}
	// Kick: 4003 with the reason.
	if code, body := call(t, admin, "POST", srv.URL+"/api/users/bob/disconnect"); code != http.StatusOK || body["disconnected"] != 1.0 {
		t.Fatalf("kick: %d %v", code, body)
	}
	_, err := bobWS.next()
	if websocket.CloseStatus(err) != pubsub.CloseDisconnected || !strings.Contains(err.Error(), "kicked by a moderator") {
		t.Fatalf("bob's connection ended with %v", err)
	}
}

// Logging out ends the user's live connections.
func TestChatLogoutDisconnects(t *testing.T) {
	srv := newChat(t)
	carol := login(t, srv, "carol")
	ws := dialChat(t, srv, carol, "")
	ws.expect("welcome")
	resp, err := carol.Post(srv.URL+"/logout", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, err = ws.next()
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != pubsub.CloseDisconnected || ce.Reason != "logged out" {
		t.Fatalf("after logout: %v", err)
	}
}

// With expiring sessions, a connection is asked to refresh, refreshes
// through the login middleware (which renews the cookie in the client's
// jar) and outlives its first expiry on the same connection.
func TestChatSessionRefresh(t *testing.T) {
	srv := newChatWith(t, 2*time.Second)
	dave := login(t, srv, "dave")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, srv.URL+"/live", &client.Options{HTTPClient: dave})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lobby, err := c.Subscribe(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	conn := c.Conn()
	time.Sleep(2500 * time.Millisecond) // past the first expiry
	if code := post(t, dave, srv.URL+"/api/rooms/lobby/messages", "still here"); code != http.StatusAccepted {
		t.Fatal(code)
	}
	for m, err := range lobby.Messages(ctx) {
		if err != nil {
			t.Fatalf("after the first expiry: %v", err)
		}
		var d chatMessage
		_ = json.Unmarshal(m.Data, &d)
		if d.Text != "still here" {
			t.Fatalf("got %s", m.Data)
		}
		break
	}
	if c.Conn() != conn {
		t.Fatalf("the connection was replaced (%s, then %s): the refresh did not keep it", conn, c.Conn())
	}
}

// Pages send with a call: validated on the server, answered with the
// stored message's id, or refused with a reason.
func TestChatSendsByCall(t *testing.T) {
	srv := newChat(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, srv.URL+"/live", &client.Options{HTTPClient: login(t, srv, "erin")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lobby, err := c.Subscribe(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := c.Call(ctx, "send", map[string]string{"room": "lobby", "text": "hello"})
	var r struct{ ID string }
	if err != nil || json.Unmarshal(reply, &r) != nil || r.ID == "" {
		t.Fatalf("call: %s %v", reply, err)
	}
	for m, err := range lobby.Messages(ctx) {
		var d chatMessage
		_ = json.Unmarshal(m.Data, &d)
		if err != nil || d.Text != "hello" || d.From != "erin" || m.ID != r.ID {
			t.Fatalf("got %s (id %s, reply's %s), %v", m.Data, m.ID, r.ID, err)
		}
		break
	}
	var e *client.Error
	if _, err := c.Call(ctx, "send", map[string]string{"room": "lobby", "text": "   "}); !errors.As(err, &e) || e.Code != "invalid" || !strings.Contains(e.Message, "1 to 2000") {
		t.Fatalf("empty text: %v", err)
	}
	if _, err := c.Call(ctx, "send", map[string]string{"room": "a.b", "text": "x"}); !errors.Is(err, client.ErrInvalidRoom) {
		t.Fatalf("bad room: %v", err)
	}
}
