package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/examples/internal/demoauth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type frame struct {
	Type, Room, To, Code string
	Data                 chatMessage
}

func newChat(t *testing.T) *httptest.Server { return newChatWith(t, 0) }

// newChatWith runs the chat with sessions that expire after ttl (0: never).
func newChatWith(t *testing.T, ttl time.Duration) *httptest.Server {
	ps, err := newBroker(pubsub.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	auth := demoauth.New()
	auth.TTL = ttl
	srv := httptest.NewServer(newApp(ps, auth))
	t.Cleanup(func() { _ = ps.Close(); srv.Close() })
	return srv
}

func login(t *testing.T, srv *httptest.Server, name string) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	resp, err := c.PostForm(srv.URL+"/login", url.Values{"name": {name}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // after the redirect to /
		t.Fatalf("login %s: %d", name, resp.StatusCode)
	}
	return c
}

func post(t *testing.T, c *http.Client, url, text string) int {
	resp, err := c.Post(url, "application/json", strings.NewReader(`{"text":`+string(must(json.Marshal(text)))+`}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestChatEndToEnd(t *testing.T) {
	srv := newChat(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Logged out: the page loads, but the API and the live endpoint refuse.
	for _, path := range []string{"/live?room=lobby", "/api/me"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET %s logged out: %d", path, resp.StatusCode)
		}
	}
	if code := post(t, http.DefaultClient, srv.URL+"/api/rooms/lobby/messages", "x"); code != http.StatusUnauthorized {
		t.Fatalf("POST logged out: %d", code)
	}
	forged := &http.Request{Header: http.Header{"Cookie": {demoauth.CookieName + "=YWxpY2U.AAAA"}}}
	if _, _, err := websocket.Dial(ctx, "ws"+srv.URL[4:]+"/live", &websocket.DialOptions{HTTPHeader: forged.Header}); err == nil {
		t.Fatal("a forged cookie opened a connection")
	}

	alice, bob := login(t, srv, "alice"), login(t, srv, "bob")

	// alice over WebSocket, bob over SSE.
	ws, _, err := websocket.Dial(ctx, "ws"+srv.URL[4:]+"/live?room=lobby", &websocket.DialOptions{HTTPClient: alice})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	var pending []string // one WebSocket message may hold several frames
	readWS := func() frame {
		if len(pending) == 0 {
			_, p, err := ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pending = strings.Split(string(p), "\n")
		}
		var f frame
		_ = json.Unmarshal([]byte(pending[0]), &f)
		pending = pending[1:]
		return f
	}
	if f := readWS(); f.Type != "welcome" {
		t.Fatalf("got %+v", f)
	}
	if f := readWS(); f.Type != "subscribed" {
		t.Fatalf("got %+v", f)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/live?room=lobby&room=random", nil)
	req.Header.Set("Accept", "text/event-stream")
	sseClient := &http.Client{Jar: bob.Jar}
	resp, err := sseClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	readSSE := func() frame {
		for events.Scan() {
			if line, ok := strings.CutPrefix(events.Text(), "data: "); ok {
				var f frame
				_ = json.Unmarshal([]byte(line), &f)
				return f
			}
		}
		t.Fatal("SSE stream ended")
		return frame{}
	}
	for range 3 { // welcome, subscribed ×2
		readSSE()
	}

	if code := post(t, bob, srv.URL+"/api/rooms/lobby/messages", "hi from bob"); code != http.StatusAccepted {
		t.Fatalf("POST: %d", code)
	}
	for _, f := range []frame{readWS(), readSSE()} {
		if f.Type != "message" || f.Room != "lobby" || f.Data.From != "bob" || f.Data.Text != "hi from bob" {
			t.Fatalf("got %+v", f)
		}
	}
	if code := post(t, alice, srv.URL+"/api/rooms/random/messages", "only random"); code != http.StatusAccepted {
		t.Fatalf("POST: %d", code)
	}
	if f := readSSE(); f.Room != "random" || f.Data.From != "alice" {
		t.Fatalf("got %+v", f)
	}
	// A direct message reaches bob, and alice's own tabs.
	if code := post(t, alice, srv.URL+"/api/users/bob/messages", "psst"); code != http.StatusAccepted {
		t.Fatalf("POST DM: %d", code)
	}
	if f := readSSE(); f.Type != "inbox" || f.Data.From != "alice" || f.Data.To != "bob" || f.Data.Text != "psst" {
		t.Fatalf("bob got %+v", f)
	}
	// alice was not in "random": her next frame is her DM copy.
	if f := readWS(); f.Type != "direct" || f.Data.Text != "psst" {
		t.Fatalf("alice got %+v", f)
	}
	for _, bad := range []string{"a.b", "%3E", "%24SYS"} {
		if code := post(t, alice, srv.URL+"/api/rooms/"+bad+"/messages", "x"); code != http.StatusBadRequest {
			t.Errorf("POST to room %s: %d", bad, code)
		}
	}
	if code := post(t, alice, srv.URL+"/api/rooms/lobby/messages", ""); code != http.StatusBadRequest {
		t.Errorf("empty text: %d", code)
	}
	page, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if !strings.Contains(string(body), `import { connect } from "/live/client.js"`) {
		t.Fatal("the page does not use the client")
	}
	js, err := alice.Get(srv.URL + "/live/client.js")
	if err != nil {
		t.Fatal(err)
	}
	js.Body.Close()
	if js.StatusCode != http.StatusOK || !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("/live/client.js: %d %s", js.StatusCode, js.Header.Get("Content-Type"))
	}
}
