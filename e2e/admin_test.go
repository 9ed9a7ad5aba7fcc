package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The chat example's ops page, in Chromium: it goes live over its own SSE,
// its charts move while messages flow, it shows the connection and the
// room's presence; /metrics and /api/stats agree. The page is reached from
// this machine, which the demo's operator check lets in without a login.
func TestAdminPageIsLive(t *testing.T) {
	base := startExample(t, "chat")
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	if resp, err := hc.PostForm(base+"/login", url.Values{"name": {"alice"}}); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	u, _ := url.Parse(base)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+u.Host+"/live?room=lobby", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	go func() { // a reader, so that alice is a healthy subscriber
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	}()

	admin := newTab(t)
	admin.open(base + "/admin")
	admin.waitFor("live", `document.querySelector("#status").textContent === "live"`)
	admin.waitFor("one WebSocket connection", `[...document.querySelectorAll("#kpis .kpi")].some(k => k.querySelector("span").textContent === "WebSocket" && k.querySelector("b").textContent === "1")`)

	go func() { // messages flowing while the page watches
		for ctx.Err() == nil {
			resp, err := hc.Post(base+"/api/rooms/lobby/messages", "application/json", strings.NewReader(`{"text":"tick"}`))
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	admin.waitFor("the deliveries chart to move", `+document.querySelector("#chart-deliveries").dataset.last > 0`)
	admin.waitFor("the messages chart to move", `+document.querySelector("#chart-messages").dataset.last > 0`)
	admin.waitFor("lobby among the top rooms", `document.querySelector("#rooms").innerText.includes("lobby")`)

	admin.run(setValue("#presence-room", "lobby"), submit("#presence-room"))
	admin.waitFor("lobby's presence", `document.querySelector("#presence").innerText.includes("alice")`)
	admin.screenshot("admin")

	for path, want := range map[string]string{
		"/metrics":               "roomcast_deliveries_total",
		"/api/stats":             `"deliveries":`,
		"/api/rooms/lobby/users": `"user":"alice"`,
		"/healthz":               "ok",
	} {
		resp, err := http.Get(base + path) // no cookie: from this machine
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, %.200q; want %q", path, resp.StatusCode, body, want)
		}
	}
	// A logged-in user who is not the operator, from a proxy: refused.
	req, _ := http.NewRequest(http.MethodGet, base+"/admin", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	if resp, err := hc.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Errorf("/admin for alice through a proxy: %d, want 403", resp.StatusCode)
	}
}
