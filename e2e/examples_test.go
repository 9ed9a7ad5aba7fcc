package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/testkit"

	"github.com/chromedp/chromedp"
)

// login fills the example's login form.
func (b *tab) login(name string) {
	b.t.Helper()
	b.waitFor("login form", `!document.querySelector("#login").classList.contains("hidden")`)
	b.run(setValue("#login [name=name]", name), submit("#login [name=name]"))
}

// The chat example end to end: two people log in, join a room, one sends
// through the REST API, the other sees it; then a direct message.
func TestChatExample(t *testing.T) {
	url := startExample(t, "chat")
	alice, bob := newTab(t), newTab(t)
	for name, b := range map[string]*tab{"alice": alice, "bob": bob} {
		b.open(url)
		b.login(name)
		b.waitFor("live", `live.state === "open"`)
		b.run(setValue("#join [name=room]", "game:42"), submit("#join [name=room]"))
		b.waitFor("room button", `!!document.querySelector('button[data-room="game:42"]')`)
	}
	// Joining is a subscribe frame; give it its round trip before sending.
	bob.waitFor("subscribed", `document.querySelector('button[data-room="game:42"]').classList.contains("active")`)
	alice.run(setValue("#send [name=text]", "hello from alice"), submit("#send [name=text]"))
	bob.waitFor("alice's message", `document.querySelector("#log").innerText.includes("hello from alice")`)
	var from string
	bob.eval(`document.querySelector("#log li .from").textContent`, &from)
	if from != "alice" {
		t.Fatalf("sender shown as %q", from)
	}
	// lobby did not get it.
	bob.run(click(`button[data-room="lobby"]`))
	var lobby string
	bob.eval(`document.querySelector("#log").innerText`, &lobby)
	if lobby != "" {
		t.Fatalf("lobby shows %q", lobby)
	}
	// A direct message.
	alice.run(click("#dms"), setValue("#send [name=to]", "bob"), setValue("#send [name=text]", "psst"), submit("#send [name=text]"))
	bob.waitFor("DM badge", `document.querySelector("#dms").textContent.includes("(1)")`)
	bob.run(click("#dms"))
	bob.waitFor("DM text", `document.querySelector("#log").innerText.includes("psst")`)
	alice.screenshot("chat-alice")
	bob.screenshot("chat-bob")
}

// The chat's moderator (the user "admin") moves a user into a room and out
// of it and kicks them, from the page; the kicked browser stays
// disconnected.
func TestChatModeratorFromThePage(t *testing.T) {
	url := startExample(t, "chat")
	admin, bob := newTab(t), newTab(t)
	for name, b := range map[string]*tab{"admin": admin, "bob": bob} {
		b.open(url)
		b.login(name)
		b.waitFor("live", `live.state === "open"`)
	}
	admin.waitFor("the moderator panel", `!document.querySelector("#mod").classList.contains("hidden")`)
	var hidden bool
	bob.eval(`document.querySelector("#mod").classList.contains("hidden")`, &hidden)
	if !hidden {
		t.Fatal("bob sees the moderator panel")
	}
	var firstConn string
	bob.eval(`live.conn`, &firstConn)

	admin.run(setValue("#mod-user", "bob"), setValue("#mod-room", "den"), click("#mod-move"))
	bob.waitFor("moved into den", `document.querySelector('button[data-room="den"]')?.classList.contains("active") && document.querySelector("#notice").textContent.includes("moved you into #den")`)
	// The room is bob's now: a message to it shows, through the REST API.
	admin.eval(`fetch("/api/rooms/den/messages", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({text: "hello den"})}).then(r => r.status)`, nil)
	bob.waitFor("the den's message", `document.querySelector("#log").innerText.includes("hello den")`)

	admin.run(click("#mod-remove"))
	bob.waitFor("removed from den", `!document.querySelector('button[data-room="den"]') && document.querySelector("#notice").textContent.includes("removed you from #den")`)

	admin.run(click("#mod-kick"))
	bob.waitFor("kicked", `live.state === "closed" && document.querySelector("#notice").textContent.includes("disconnected")`)
	bob.screenshot("chat-kicked")
	// It stays disconnected: no reconnect in the next seconds, no connection on the server.
	time.Sleep(3 * time.Second)
	var state string
	bob.eval(`live.state`, &state)
	var conns float64
	admin.run(chromedp.Evaluate(`fetch("/api/users/bob/conns").then(r => r.json()).then(b => (b.conns || []).length)`, &conns, awaitPromise))
	if state != "closed" || conns != 0 {
		t.Fatalf("after the kick: bob's client is %q, the server has %v of his connections", state, conns)
	}
}

// With expiring sessions the browser client refreshes by itself, through
// the login middleware, and keeps its connection past the first expiry.
func TestChatSessionRefreshesInTheBrowser(t *testing.T) {
	url := startExample(t, "chat", "-session-ttl", "3s")
	b := newTab(t)
	b.open(url)
	b.login("erin")
	b.waitFor("live", `live.state === "open"`)
	b.eval(`window.states = []; live.on("state", (s) => states.push(s)); true`, nil)
	var conn string
	b.eval(`live.conn`, &conn)
	time.Sleep(5 * time.Second) // past the first expiry (3 s)
	var after string
	var states []string
	b.eval(`live.conn`, &after)
	b.eval(`states`, &states)
	if after != conn || len(states) != 0 {
		t.Fatalf("the connection changed (%s → %s) or its state did (%v): no refresh", conn, after, states)
	}
	b.run(setValue("#send [name=text]", "still here"), submit("#send [name=text]"))
	b.waitFor("own message", `document.querySelector("#log").innerText.includes("still here")`)
}

// A direct message to someone who has never logged in waits in their
// inbox and shows when they do; it is not shown twice after a reload.
func TestChatDirectMessageToOfflineUser(t *testing.T) {
	url := startExample(t, "chat")
	alice := newTab(t)
	alice.open(url)
	alice.login("alice")
	alice.waitFor("live", `live.state === "open"`)
	alice.run(click("#dms"), setValue("#send [name=to]", "carol"), setValue("#send [name=text]", "while you were away"), submit("#send [name=text]"))
	alice.waitFor("own copy", `document.querySelector("#log").innerText.includes("while you were away")`)

	carol := newTab(t)
	carol.open(url)
	carol.login("carol")
	carol.waitFor("the waiting DM", `document.querySelector("#dms").textContent.includes("(1)")`)
	carol.run(click("#dms"))
	carol.waitFor("its text", `document.querySelector("#log").innerText.includes("while you were away")`)
	// Shown, so acknowledged: a reload does not bring it back.
	time.Sleep(500 * time.Millisecond)
	carol.open(url)
	carol.waitFor("live again", `live.state === "open"`)
	time.Sleep(time.Second)
	var dms string
	carol.eval(`document.querySelector("#dms").textContent`, &dms)
	if dms != "Direct messages" {
		t.Fatalf("after a reload: %q", dms)
	}
}

// With WebSocket blocked by a proxy in front of it, the chat works fully
// over SSE: joining a room, sending with a call, direct messages.
func TestChatWithWebSocketBlocked(t *testing.T) {
	backend, _ := neturl.Parse(startExample(t, "chat"))
	rp := httputil.NewSingleHostReverseProxy(backend)
	rp.FlushInterval = -1
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "WebSocket blocked by policy", http.StatusForbidden)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	alice, bob := newTab(t), newTab(t)
	for name, b := range map[string]*tab{"alice": alice, "bob": bob} {
		b.open(front.URL)
		b.login(name)
		b.waitFor("live over SSE", `live.state === "open" && live.transport === "sse"`)
		b.run(setValue("#join [name=room]", "blocked"), submit("#join [name=room]"))
		b.waitFor("room button", `document.querySelector('button[data-room="blocked"]')?.classList.contains("active")`)
	}
	time.Sleep(300 * time.Millisecond) // the subscribe POST's round trip
	alice.run(setValue("#send [name=text]", "over sse only"), submit("#send [name=text]"))
	bob.waitFor("alice's message", `document.querySelector("#log").innerText.includes("over sse only")`)
	alice.run(click("#dms"), setValue("#send [name=to]", "bob"), setValue("#send [name=text]", "dm over sse"), submit("#send [name=text]"))
	bob.waitFor("DM badge", `document.querySelector("#dms").textContent.includes("(1)")`)
	var transport string
	bob.eval(`live.transport`, &transport)
	if transport != "sse" {
		t.Fatalf("transport %q", transport)
	}
}

// The ticker example follows prices over SSE only, and the charts move.
func TestTickerExample(t *testing.T) {
	url := startExample(t, "ticker", "-interval", "50ms")
	b := newTab(t)
	b.open(url)
	b.waitFor("live over SSE", `live.state === "open" && live.transport === "sse"`)
	b.waitFor("six charts", `document.querySelectorAll(".card canvas").length === 6`)
	var before string
	b.eval(`document.querySelector('[data-symbol="NVDA"] label').textContent`, &before)
	b.waitFor("live prices", `document.querySelector('[data-symbol="NVDA"] label').textContent !== `+jsString(before))
	b.run(chromedp.Sleep(500 * 1e6))
	b.screenshot("ticker")
}

// The notify example: a notification reaches both tabs of its user and no
// one else.
func TestNotifyExample(t *testing.T) {
	url := startExample(t, "notify")
	alice, bob := newTab(t), newTab(t)
	alice.open(url)
	alice.login("alice")
	alice.waitFor("live", `live.state === "open"`)
	alice2 := alice.sibling() // a second tab, same session
	alice2.open(url)
	bob.open(url)
	bob.login("bob")
	for _, b := range []*tab{alice2, bob} {
		b.waitFor("live", `live.state === "open"`)
	}
	bob.run(setValue("#send [name=to]", "alice"), setValue("#send [name=title]", "build is green"), submit("#send [name=title]"))
	for _, b := range []*tab{alice, alice2} {
		b.waitFor("notification", `document.querySelector("#inbox").innerText.includes("build is green")`)
	}
	// Bob notifies himself last: when he has that, he would have had alice's.
	bob.run(setValue("#send [name=to]", "bob"), setValue("#send [name=title]", "note to self"), submit("#send [name=title]"))
	bob.waitFor("own note", `document.querySelector("#inbox").innerText.includes("note to self")`)
	var n int
	bob.eval(`document.querySelectorAll("#inbox li").length`, &n)
	if n != 1 {
		t.Fatalf("bob has %d notifications, want 1", n)
	}
	alice.screenshot("notify-alice")
	bob.screenshot("notify-bob")
}

// startCluster runs the cluster example's three instances, each its own
// process, on free ports, as a deployment would. It returns their URLs and
// processes.
func startCluster(t *testing.T) ([]string, []*exec.Cmd) {
	t.Helper()
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	var urls, routes []string
	var httpPorts, routePorts []int
	for range 3 {
		httpPorts, routePorts = append(httpPorts, free()), append(routePorts, free())
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d", httpPorts[len(httpPorts)-1]))
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[len(routePorts)-1]))
	}
	var cmds []*exec.Cmd
	for i := range 3 {
		cmd := exec.Command(filepath.Join(binDir, "cluster"), "-node", strconv.Itoa(i),
			"-http", fmt.Sprintf("127.0.0.1:%d", httpPorts[i]), "-route-port", strconv.Itoa(routePorts[i]),
			"-routes", strings.Join(routes, ","), "-peers", strings.Join(urls, ","))
		cmd.Env = append(os.Environ(), "DEMO_SESSION_KEY=00112233445566778899aabbccddeeff")
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		testkit.StopAtCleanup(t, cmd, 10*time.Second, nil)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range urls {
		for {
			resp, err := http.Get(u + "/api/instance")
			if err == nil {
				resp.Body.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not start: %v", u, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return urls, cmds
}

// The cluster example: alice on instance 0 and bob on instance 1 see each
// other in the room's presence and each other's messages. Instance 1 is
// killed: bob's page moves to another instance and resumes, so it shows
// every message exactly once, in order, including those sent while it was
// moving; alice's page shows bob still there.
func TestClusterExample(t *testing.T) {
	urls, cmds := startCluster(t)
	alice, bob := newTab(t), newTab(t)
	alice.open(urls[0])
	alice.login("alice")
	bob.open(urls[1])
	bob.login("bob")
	for _, b := range []*tab{alice, bob} {
		b.waitFor("live", `live.state === "open" && document.querySelector("#live-instance").textContent.startsWith("node")`)
		b.waitFor("both present", `document.querySelector("#count").textContent === "2"`)
	}
	for _, u := range urls {
		resp, err := http.Get(u + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s/healthz: %d", u, resp.StatusCode)
		}
	}
	// The ops page of one instance shows the whole cluster.
	ops := newTab(t)
	ops.open(urls[0] + "/admin")
	instances := func(n int) string {
		return `[...document.querySelectorAll("#kpis .kpi")].some(k => k.querySelector("span").textContent === "instances" && k.querySelector("b").textContent === "` + strconv.Itoa(n) + `")`
	}
	ops.waitFor("three instances", instances(3))
	var where string
	bob.eval(`document.querySelector("#live-instance").textContent`, &where)
	if where != "node1" {
		t.Fatalf("bob is live on %q, want node1", where)
	}
	send := func(text string) {
		t.Helper()
		// While the cluster replaces a dead node's part, a publish may fail: retry, as an app would.
		var ok bool
		alice.eval(`(async () => {
			for (let i = 0; i < 40; i++) {
				try { await live.publish("lobby", {text: `+jsString(text)+`, via: "node0"}); return true; }
				catch { await new Promise((r) => setTimeout(r, 250)); }
			}
			return false;
		})()`, &ok)
		if !ok {
			t.Fatalf("publishing %s failed", text)
		}
	}
	send("m1")
	bob.waitFor("m1", `document.querySelector("#messages").innerText.includes("m1")`)

	_ = cmds[1].Process.Kill() // no goodbye: a crashed instance
	for i := 2; i <= 6; i++ {
		send(fmt.Sprintf("m%d", i))
	}
	bob.waitFor("moved", `live.state === "open" && ["node0", "node2"].includes(document.querySelector("#live-instance").textContent)`)
	send("m7")
	bob.waitFor("m7", `document.querySelector("#messages").innerText.includes("m7")`)
	var got []string
	bob.eval(`[...document.querySelectorAll("#messages li")].map((li) => li.lastChild.textContent)`, &got)
	if want := []string{"m1", "m2", "m3", "m4", "m5", "m6", "m7"}; !slices.Equal(got, want) {
		t.Fatalf("bob's page shows %q, want %q", got, want)
	}
	// Alice sees bob still there; node1's entries expire with its heartbeats.
	alice.waitFor("bob, once", `document.querySelector("#count").textContent === "2" && document.querySelector("#members").innerText.split("\n").includes("bob")`)
	ops.waitFor("two instances", instances(2))
	alice.screenshot("cluster-alice")
	bob.screenshot("cluster-bob")
	ops.screenshot("cluster-admin")
}
