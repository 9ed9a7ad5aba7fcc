package e2e

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/roomcast/pubsub"
)

// testPage connects with the client served by the handler and records
// everything it sees in window.events. Query: rooms=a,b and transport=.
const testPage = `<!doctype html><meta charset="utf-8"><title>client test</title><body><pre id="log"></pre>
<script type="module">
import { connect } from "/live/client.js";
const q = new URLSearchParams(location.search);
const events = (window.events = []);
const log = (e) => { events.push(e); document.querySelector("#log").textContent += JSON.stringify(e) + "\n"; };
const live = (window.live = connect("/live", { transport: q.get("transport") || "auto", minDelay: 50, maxDelay: 500 }));
live.on("state", (s, d) => log({ kind: "state", state: s, code: d && d.code, transport: live.transport }));
live.on("subscribed", (room) => log({ kind: "subscribed", room }));
live.on("truncated", (room) => log({ kind: "truncated", room }));
live.on("error", (e) => log({ kind: "error", code: e.code, room: e.room }));
live.on("direct", (data, f) => log({ kind: "direct", to: f.to, text: data.text }));
window.join = (room) => live.subscribe(room, (data, f) => log({ kind: "message", room, text: data.text, id: f.id }));
for (const room of (q.get("rooms") || "").split(",").filter(Boolean)) join(room);
</script>`

// libServer serves testPage and the broker's handler at /live and /live/,
// behind a cookie identity (GET /login?name= sets it) and wrap.
func libServer(t *testing.T, ps *pubsub.Broker, wrap func(http.Handler) http.Handler) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, testPage)
	})
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "user", Value: r.URL.Query().Get("name"), Path: "/"})
		http.Redirect(w, r, "/?"+r.URL.Query().Get("then"), http.StatusSeeOther)
	})
	live := http.Handler(ps.Handler())
	if wrap != nil {
		live = wrap(live)
	}
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("user"); err == nil && c.Value != "" {
			r = r.WithContext(pubsub.ContextWithUser(r.Context(), c.Value))
		}
		live.ServeHTTP(w, r)
	})
	mux.Handle("/live", auth)
	mux.Handle("/live/", auth)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func newBroker(t *testing.T, opts ...pubsub.Option) *pubsub.Broker {
	ps, err := pubsub.New(append([]pubsub.Option{pubsub.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	return ps
}

var bg = context.Background()

func publish(t *testing.T, ps *pubsub.Broker, room, text string) {
	t.Helper()
	if err := ps.Publish(bg, room, []byte(`{"text":`+jsString(text)+`}`)); err != nil {
		t.Fatal(err)
	}
}

const openWS = `live.state === "open" && live.transport === "websocket"`

func subscribedTo(room string, times int) string {
	return `events.filter(e => e.kind === "subscribed" && e.room === ` + jsString(room) + `).length >= ` + itoa(times)
}

func received(room, text string) string {
	return `events.some(e => e.kind === "message" && e.room === ` + jsString(room) + ` && e.text === ` + jsString(text) + `)`
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestBrowserSubscribesOverWebSocket(t *testing.T) {
	ps := newBroker(t)
	srv := libServer(t, ps, nil)
	b := newTab(t)
	b.open(srv.URL + "/?rooms=lobby,news")
	b.waitFor("open", openWS)
	b.waitFor("subscriptions", subscribedTo("lobby", 1)+" && "+subscribedTo("news", 1))
	publish(t, ps, "lobby", "hello browser")
	publish(t, ps, "other", "not for this page")
	publish(t, ps, "news", "second")
	b.waitFor("both messages", received("lobby", "hello browser")+" && "+received("news", "second"))
	var n int
	b.eval(`events.filter(e => e.kind === "message").length`, &n)
	if n != 2 {
		t.Fatalf("page received %d messages, want 2", n)
	}
	// Removing one of two handlers of a room keeps the subscription.
	b.eval(`live.subscribe("news", () => {})()`, nil)
	publish(t, ps, "news", "third")
	b.waitFor("third", received("news", "third"))
	b.screenshot("client-websocket")
}

// A proxy that strips WebSocket upgrades: the client falls back to SSE and
// still does everything: subscribes after connecting, publishes and calls,
// its frames POSTed to the same path through the same cookie check.
func TestBrowserFallsBackToSSEWhenWebSocketIsBlocked(t *testing.T) {
	ps := newBroker(t, pubsub.WithClientPublish(func(context.Context, string, string) error { return nil }),
		pubsub.WithCall("whoami", func(_ context.Context, c pubsub.Call) ([]byte, error) {
			return []byte(`{"user":` + jsString(c.Conn.User()) + `,"transport":` + jsString(c.Conn.Transport()) + `}`), nil
		}))
	var blocked int
	var mu sync.Mutex
	srv := libServer(t, ps, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "" {
				mu.Lock()
				blocked++
				mu.Unlock()
				http.Error(w, "WebSocket blocked by policy", http.StatusBadRequest)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	b := newTab(t)
	b.open(srv.URL + "/login?name=sam&then=rooms=lobby")
	b.waitFor("open over SSE", `live.state === "open" && live.transport === "sse"`)
	b.waitFor("subscription", subscribedTo("lobby", 1))
	publish(t, ps, "lobby", "over sse")
	b.waitFor("message", received("lobby", "over sse"))
	b.eval(`window.opened = events.filter(e => e.kind === "state").length; true`, nil)
	// A room joined later: a POSTed subscribe, the stream stays.
	b.eval(`join("late")`, nil)
	b.waitFor("late subscription", subscribedTo("late", 1))
	publish(t, ps, "late", "late message")
	publish(t, ps, "lobby", "still lobby")
	b.waitFor("both rooms", received("late", "late message")+" && "+received("lobby", "still lobby"))
	// Publishing and calling over SSE.
	var id string
	b.run(chromedp.Evaluate(`live.publish("lobby", {text: "from sse"}).then(id => id, e => "error " + e.code)`, &id, awaitPromise))
	if id == "" || strings.HasPrefix(id, "error") {
		t.Fatalf("publish over SSE: %q", id)
	}
	b.waitFor("own message", received("lobby", "from sse"))
	var reply string
	b.run(chromedp.Evaluate(`live.call("whoami").then(r => JSON.stringify(r), e => "error " + e.code)`, &reply, awaitPromise))
	if reply != `{"user":"sam","transport":"sse"}` {
		t.Fatalf("call over SSE: %s", reply)
	}
	b.run(chromedp.Evaluate(`live.call("nobody").then(r => "ok", e => e.code)`, &reply, awaitPromise))
	if reply != "no_handler" {
		t.Fatalf("call of no handler: %s", reply)
	}
	var reconnects int
	b.eval(`events.filter(e => e.kind === "state").length - opened`, &reconnects)
	if reconnects != 0 {
		t.Errorf("the stream changed state %d times: subscribing should not reconnect it", reconnects)
	}
	mu.Lock()
	defer mu.Unlock()
	if blocked == 0 {
		t.Fatal("the client never tried WebSocket")
	}
}

// proxy forwards TCP to a backend that can be swapped, and can cut every
// connection: a network drop, or a load balancer moving to a new server.
type proxy struct {
	ln      net.Listener
	mu      sync.Mutex
	backend string
	conns   []net.Conn
	refused bool
}

// refuse makes new connections fail (closed at once) while on.
func (p *proxy) refuse(on bool) {
	p.mu.Lock()
	p.refused = on
	p.mu.Unlock()
}

func newProxy(t *testing.T, backend string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, backend: backend}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.refused {
				p.mu.Unlock()
				c.Close()
				continue
			}
			be, err := net.Dial("tcp", p.backend)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, be)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(be, c); be.Close() }()
			go func() { _, _ = io.Copy(c, be); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) switchTo(backend string) {
	p.mu.Lock()
	p.backend = backend
	p.mu.Unlock()
}

func TestBrowserReconnectsAndResubscribes(t *testing.T) {
	for _, transport := range []string{"websocket", "sse"} {
		t.Run(transport, func(t *testing.T) {
			ps := newBroker(t)
			srv := libServer(t, ps, nil)
			p := newProxy(t, srv.Listener.Addr().String())
			b := newTab(t)
			b.open(p.url() + "/?rooms=lobby&transport=" + transport)
			b.waitFor("open", `live.state === "open" && live.transport === `+jsString(transport))
			b.waitFor("subscription", subscribedTo("lobby", 1))
			publish(t, ps, "lobby", "before")
			b.waitFor("first message", received("lobby", "before"))

			// The network drops every connection.
			p.cut()
			b.waitFor("resubscribed after the drop", subscribedTo("lobby", 2)+` && live.state === "open"`)
			publish(t, ps, "lobby", "after drop")
			b.waitFor("message after the drop", received("lobby", "after drop"))

			// The server restarts: the old broker says 1012, a new one
			// takes over at the same address.
			ps2 := newBroker(t)
			srv2 := libServer(t, ps2, nil)
			p.switchTo(srv2.Listener.Addr().String())
			if err := ps.Shutdown(bg); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatal(err)
			}
			b.waitFor("close 1012 seen", `events.some(e => e.kind === "state" && e.state === "closed" && e.code === 1012)`)
			b.waitFor("resubscribed after the restart", subscribedTo("lobby", 3)+` && live.state === "open"`)
			publish(t, ps2, "lobby", "after restart")
			b.waitFor("message after the restart", received("lobby", "after restart"))
		})
	}
}

func TestBrowserDeniedRoomIsReported(t *testing.T) {
	ps := newBroker(t, pubsub.WithSubscribeAuth(func(ctx context.Context, user, room string) error {
		if room == "secret" {
			return errors.New("members only")
		}
		return nil
	}))
	srv := libServer(t, ps, nil)
	b := newTab(t)
	b.open(srv.URL + "/?rooms=lobby,secret")
	b.waitFor("forbidden error", `events.some(e => e.kind === "error" && e.code === "forbidden" && e.room === "secret")`)
	b.waitFor("lobby subscribed", subscribedTo("lobby", 1))
	publish(t, ps, "secret", "leak")
	publish(t, ps, "lobby", "ok")
	b.waitFor("lobby message", received("lobby", "ok"))
	var leaked bool
	b.eval(received("secret", "leak"), &leaked)
	if leaked {
		t.Fatal("a denied room's message reached the page")
	}
	// A client publish without permission is a rejected promise, not silence.
	var code string
	b.eval(`live.publish("lobby", {text: "x"}).then(() => "ok", e => e.code)`, &code)
	if code != "forbidden" {
		t.Fatalf("publish without permission: %q", code)
	}
}

// Two browsers, two users: a message for one user reaches only that
// user's tabs.
func TestBrowserUserTargeting(t *testing.T) {
	ps := newBroker(t)
	srv := libServer(t, ps, nil)
	alice, bob := newTab(t), newTab(t)
	alice.open(srv.URL + "/login?name=alice")
	bob.open(srv.URL + "/login?name=bob")
	alice2 := alice.sibling()
	alice2.open(srv.URL + "/")
	for _, b := range []*tab{alice, alice2, bob} {
		b.waitFor("open", openWS)
	}
	var user string
	alice2.eval(`live.user`, &user)
	if user != "alice" {
		t.Fatalf("second tab is user %q", user)
	}
	for _, m := range [][2]string{{"alice", "for alice"}, {"bob", "end"}, {"alice", "end"}} {
		if err := ps.SendToUser(bg, m[0], []byte(`{"text":`+jsString(m[1])+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[*tab]string{alice: "for alice,end", alice2: "for alice,end", bob: "end"}
	for b, w := range want {
		b.waitFor("end marker", `events.some(e => e.kind === "direct" && e.text === "end")`)
		var got string
		b.eval(`events.filter(e => e.kind === "direct").map(e => e.text).join(",")`, &got)
		if got != w {
			t.Errorf("direct messages %q, want %q", got, w)
		}
	}
}

// An oversized message closes the connection (1009): the page gets a clear
// error, and the client reconnects and resubscribes.
func TestBrowserOversizedMessageIsReported(t *testing.T) {
	ps := newBroker(t, pubsub.WithMaxMessageSize(1024), pubsub.WithClientPublish(func(context.Context, string, string) error { return nil }))
	srv := libServer(t, ps, nil)
	b := newTab(t)
	b.open(srv.URL + "/?rooms=lobby")
	b.waitFor("open", openWS)
	b.waitFor("subscription", subscribedTo("lobby", 1))
	var id string
	b.eval(`live.publish("lobby", {text: "small"})`, &id)
	if id == "" {
		t.Fatal("publish returned no id")
	}
	b.waitFor("own message", received("lobby", "small"))
	var code string
	b.eval(`live.publish("lobby", {text: "x".repeat(5000)}).then(() => "ok", e => e.code)`, &code)
	if code != "closed" {
		t.Fatalf("oversized publish: %q", code)
	}
	b.waitFor("too_large error", `events.some(e => e.kind === "error" && e.code === "too_large")`)
	b.waitFor("close 1009", `events.some(e => e.kind === "state" && e.state === "closed" && e.code === 1009)`)
	b.waitFor("resubscribed", subscribedTo("lobby", 2)+` && live.state === "open"`)
	publish(t, ps, "lobby", "after")
	b.waitFor("message after reconnect", received("lobby", "after"))
}

// Over SSE one refused room fails the whole request (403): the client asks
// which room with its probe, reports it, and connects with the others.
func TestBrowserSSERefusedRoomIsDroppedAndReported(t *testing.T) {
	ps := newBroker(t, pubsub.WithSubscribeAuth(func(ctx context.Context, user, room string) error {
		if room == "secret/vip:é" {
			return errors.New("members only")
		}
		return nil
	}))
	srv := libServer(t, ps, nil)
	b := newTab(t)
	b.open(srv.URL + "/?transport=sse&rooms=lobby,secret%2Fvip%3A%C3%A9")
	b.waitFor("forbidden error naming the room", `events.some(e => e.kind === "error" && e.code === "forbidden" && e.room === "secret/vip:é")`)
	b.waitFor("open with the other room", `live.state === "open" && `+subscribedTo("lobby", 1))
	publish(t, ps, "lobby", "ok")
	b.waitFor("lobby message", received("lobby", "ok"))
}

// The page reads a room's recent history through the client.
func TestBrowserReadsHistory(t *testing.T) {
	ps := newBroker(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 10}))
	for _, text := range []string{"one", "two", "three"} {
		publish(t, ps, "chat:x", text)
	}
	srv := libServer(t, ps, nil)
	b := newTab(t)
	b.open(srv.URL + "/")
	b.waitFor("open", openWS)
	var got string
	b.eval(`live.history("chat:x", 2).then(ms => ms.map(m => m.data.text + "@" + m.id).join(","))`, &got)
	if got != "two@2,three@3" {
		t.Fatalf("history: %q", got)
	}
	var code string
	b.eval(`live.history("lobby").then(() => "ok", e => e.code)`, &code)
	if code != "no_history" {
		t.Fatalf("history of a plain room: %q", code)
	}
}

// A publish is safe to retry with its key (a rejection carries it): the
// second one is stored once and answered with the first id; without a key,
// each publish is a message of its own.
func TestBrowserPublishKeyMakesRetrySafe(t *testing.T) {
	ps := newBroker(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 10}),
		pubsub.WithClientPublish(func(context.Context, string, string) error { return nil }))
	srv := libServer(t, ps, nil)
	b := newTab(t)
	b.open(srv.URL + "/")
	b.waitFor("open", openWS)
	var got string
	b.eval(`(async () => {
		const a = await live.publish("chat:k", {n: 1}, "order-9");
		const again = await live.publish("chat:k", {n: 1}, "order-9");
		const c = await live.publish("chat:k", {n: 2});
		const d = await live.publish("chat:k", {n: 2});
		const key = await live.publish("chat:k", 1, "bad key").then(() => "", (e) => e.code + ":" + e.key);
		return [a === again, c !== d && c !== a, key].join(",");
	})()`, &got)
	if got != "true,true,bad_request:bad key" {
		t.Fatalf("publish ids: %q", got)
	}
	stored, err := ps.History(context.Background(), "chat:k", 10)
	if err != nil || len(stored) != 3 {
		t.Fatalf("stored %d messages (%v), want 3", len(stored), err)
	}
}

// The client resumes by itself: messages published while it was cut off
// arrive after the reconnect, once each, in order.
func TestBrowserResumesWithoutLoss(t *testing.T) {
	for _, transport := range []string{"websocket", "sse"} {
		t.Run(transport, func(t *testing.T) {
			ps := newBroker(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 1000}))
			srv := libServer(t, ps, nil)
			p := newProxy(t, srv.Listener.Addr().String())
			b := newTab(t)
			b.open(p.url() + "/?rooms=chat:r&transport=" + transport)
			b.waitFor("subscribed", subscribedTo("chat:r", 1)+` && live.transport === `+jsString(transport))
			for i := range 5 {
				publish(t, ps, "chat:r", strconv.Itoa(i))
			}
			b.waitFor("first five", received("chat:r", "4"))
			p.cut()
			p.refuse(true) // stays away while the room moves on
			for i := 5; i < 25; i++ {
				publish(t, ps, "chat:r", strconv.Itoa(i))
			}
			p.refuse(false)
			b.waitFor("all 25", received("chat:r", "24"))
			publish(t, ps, "chat:r", "25")
			b.waitFor("live again", received("chat:r", "25"))
			var got string
			b.eval(`events.filter(e => e.kind === "message").map(e => e.text).join(",")`, &got)
			want := make([]string, 26)
			for i := range want {
				want[i] = strconv.Itoa(i)
			}
			if got != strings.Join(want, ",") {
				t.Fatalf("page received %s", got)
			}
			var truncated bool
			b.eval(`events.some(e => e.kind === "truncated")`, &truncated)
			if truncated {
				t.Fatal("a lossless resume was reported truncated")
			}
		})
	}
}
