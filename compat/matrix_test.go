package compat

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite README.md's Works with table from the results")

// A cell is one stack, reached one way, over one transport, with the
// broker in one mode.
type cell struct {
	stack     int
	variant   variant
	transport string // "WebSocket" or "SSE"
	held      bool   // WithHoldRequests
}

// mode is one broker and the servers of every stack in front of it.
type mode struct {
	held      bool
	ps        *pubsub.Broker
	logs      *testkit.Logs
	endpoints []map[variant]endpoint
	backends  []string
	errorLogs []*lockedBuffer // net/http's own log of each stack's servers
}

// TestMatrix runs every cell: subscribe, receive, identity from the host's
// middleware, a stream kept past the stack's deadlines, and resume after a
// cut, over real sockets through the real stack; or, where the stack cannot
// carry the transport, a loud refusal. It does so with the broker's
// default (connections taken over) and with WithHoldRequests. Then it
// checks that net/http logged nothing, and README.md's table.
func TestMatrix(t *testing.T) {
	certs := newCerts(t)
	modes := []*mode{{held: false}, {held: true}}
	var allBackends []string
	for _, m := range modes {
		m.logs = &testkit.Logs{}
		opts := []pubsub.Option{pubsub.WithLogger(m.logs.Logger()), pubsub.WithHistory("chat:*", pubsub.History{Messages: 1000})}
		if m.held {
			opts = append(opts, pubsub.WithHoldRequests())
		}
		ps, err := pubsub.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ps.Close() })
		m.ps = ps
		// Each stack once, behind every front: its own server per
		// protocol, and one HTTP/1.1 backend for both proxies.
		m.endpoints = make([]map[variant]endpoint, len(stacks))
		m.backends = make([]string, len(stacks))
		m.errorLogs = make([]*lockedBuffer, len(stacks))
		for i, st := range stacks {
			h := st.build(ps)
			m.errorLogs[i] = &lockedBuffer{}
			m.backends[i] = certs.serve(t, h, "HTTP/1.1", m.errorLogs[i])
			m.endpoints[i] = map[variant]endpoint{}
			for _, v := range variants {
				var base string
				switch {
				case v.front == "direct" && v.proto == "HTTP/1.1":
					base = m.backends[i]
				case v.front == "direct":
					base = certs.serve(t, h, v.proto, m.errorLogs[i])
				case v.front == "ReverseProxy":
					base = certs.serve(t, reverseProxy(m.backends[i]), v.proto, io.Discard) // the proxy's own complaints are not ours
				default:
					continue // nginx, below
				}
				m.endpoints[i][v] = certs.endpoint(base, v.proto)
			}
		}
		allBackends = append(allBackends, m.backends...)
	}
	ports := startNginx(t, certs, allBackends)
	for k, m := range modes {
		for i := range stacks {
			p := ports[k*len(stacks)+i]
			m.endpoints[i][variant{"nginx", "HTTP/1.1"}] = certs.endpoint(fmt.Sprintf("http://127.0.0.1:%d", p.plain), "HTTP/1.1")
			m.endpoints[i][variant{"nginx", "HTTP/2"}] = certs.endpoint(fmt.Sprintf("https://127.0.0.1:%d", p.tls), "HTTP/2")
		}
	}

	var mu sync.Mutex
	results := map[cell]outcome{}
	t.Run("cells", func(t *testing.T) {
		sem := make(chan struct{}, 12) // cells mostly wait on sockets
		var wg sync.WaitGroup
		n := 0
		for _, m := range modes {
			for si, st := range stacks {
				for _, v := range variants {
					for _, tr := range []string{"WebSocket", "SSE"} {
						n++
						c := cell{si, v, tr, m.held}
						ep := m.endpoints[si][v]
						name := fmt.Sprintf("%s/%s/%s", slug(st.name), slug(v.String()), tr)
						if m.held {
							name = "held/" + name
						}
						user, room := fmt.Sprintf("u%d", n), fmt.Sprintf("chat:%d", n)
						wg.Add(1)
						sem <- struct{}{}
						go func() {
							defer wg.Done()
							defer func() { <-sem }()
							t.Run(name, func(t *testing.T) {
								got := runCell(t, m.ps, ep, st, tr, user, room)
								mu.Lock()
								results[c] = got
								mu.Unlock()
								if want := st.expect(tr); got != want {
									t.Errorf("%s %s: %s, want %s", st.name, v, got, want)
								}
							})
						}()
					}
				}
			}
		}
		wg.Wait()
	})
	for _, m := range modes {
		checkRefusalLogs(t, m.logs)
		for i, st := range stacks {
			// Connections end as their clients leave; give the last ones a
			// moment before reading what net/http said about them.
			time.Sleep(10 * time.Millisecond)
			noise := st.noise
			if m.held {
				noise = st.heldNoise
			}
			for _, line := range strings.Split(strings.TrimSpace(m.errorLogs[i].text()), "\n") {
				if line != "" && (noise == "" || !regexp.MustCompile(noise).MatchString(line)) {
					t.Errorf("%s (held %v): net/http logged: %s", st.name, m.held, line)
				}
			}
		}
	}
	checkReadme(t, results)
}

func (st hostStack) expect(transport string) outcome {
	if transport == "WebSocket" {
		return st.ws
	}
	return st.sse
}

func (c *certs) endpoint(base, proto string) endpoint {
	sse, ws := c.clients(proto)
	major := 1
	if proto != "HTTP/1.1" {
		major = 2
	}
	return endpoint{url: base + "/live", sse: sse, ws: ws, sseProtoM: major}
}

func runCell(t *testing.T, ps *pubsub.Broker, ep endpoint, st hostStack, transport, user, room string) outcome {
	header := http.Header{"Cookie": {"session=" + user}}
	if transport == "WebSocket" {
		return runWebSocket(t, ps, ep, st, header, user, room)
	}
	return runSSE(t, ps, ep, st, header, user, room)
}

// refusedLoudly reports whether resp is the broker's answer to a stack it
// cannot work through.
func refusedLoudly(resp *http.Response) bool {
	return resp != nil && resp.StatusCode == http.StatusInternalServerError && resp.Header.Get("Roomcast-Error") == "misconfigured"
}

// refusedPromptly is refusedLoudly, and fails the test if the refusal
// took long: a refused client must not hang.
func refusedPromptly(t *testing.T, resp *http.Response, start time.Time) bool {
	if !refusedLoudly(resp) {
		return false
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the refusal took %v", d)
	}
	return true
}

func runWebSocket(t *testing.T, ps *pubsub.Broker, ep endpoint, st hostStack, header http.Header, user, room string) outcome {
	wsURL := strings.Replace(ep.url, "http", "ws", 1)
	dial := func(query string) (*testkit.WS, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
		defer cancel()
		return testkit.DialWS(ctx, wsURL+query, &websocket.DialOptions{HTTPClient: ep.ws, HTTPHeader: header})
	}
	start := time.Now()
	ws, resp, err := dial("?room=" + url.QueryEscape(room))
	if err != nil {
		if refusedPromptly(t, resp, start) {
			return refused
		}
		t.Fatalf("dial: %v (response %v)", err, status(resp))
	}
	defer ws.Cut()
	if ws.Welcome.User != user {
		t.Fatalf("welcome user %q, want %q: identity from the host's middleware", ws.Welcome.User, user)
	}
	expect(t, ws, "subscribed", room, "")
	id1 := publish(t, ps, room, "m1")
	expectMessage(t, ws, room, "m1", id1)
	time.Sleep(st.settle)
	id2 := publish(t, ps, room, "m2")
	expectMessage(t, ws, room, "m2", id2)
	sendUsers(t, ps, user)
	expect(t, ws, "direct", "", "for "+user)
	expectNothingElse(t, ps, ws)

	ws.Cut()
	id3, id4 := publish(t, ps, room, "m3"), publish(t, ps, room, "m4")
	ws, resp, err = dial("")
	if err != nil {
		t.Fatalf("redial: %v (%v)", err, status(resp))
	}
	defer ws.Cut()
	if err := ws.Send(map[string]any{"type": "subscribe", "room": room, "last_id": id2}); err != nil {
		t.Fatal(err)
	}
	expectResumed(t, ps, ws, room, id3, id4)
	return works
}

func runSSE(t *testing.T, ps *pubsub.Broker, ep endpoint, st hostStack, header http.Header, user, room string) outcome {
	start := time.Now()
	sse, resp, err := testkit.DialSSE(ep.sse, ep.url+"?room="+url.QueryEscape(room), header)
	if err != nil {
		if refusedPromptly(t, resp, start) {
			// The browser client's probe learns the same, and stops.
			req, _ := http.NewRequest(http.MethodHead, ep.url, nil)
			req.Header = header.Clone()
			probe, err := ep.sse.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			probe.Body.Close()
			if !refusedLoudly(probe) {
				t.Errorf("HEAD probe answered %v, want 500 misconfigured", status(probe))
			}
			return refused
		}
		t.Fatalf("dial: %v (response %v)", err, status(resp))
	}
	defer sse.Close()
	if os.Getenv("COMPAT_DEBUG") != "" {
		t.Logf("DEBUG %s: proto %s CE=%q uncompressed=%v", st.name, resp.Proto, resp.Header.Get("Content-Encoding"), resp.Uncompressed)
	}
	if resp.ProtoMajor != ep.sseProtoM {
		t.Fatalf("SSE over %s, want HTTP/%d", resp.Proto, ep.sseProtoM)
	}
	if err := sse.ReadWelcome(); err != nil {
		t.Fatal(err)
	}
	if sse.Welcome.User != user {
		t.Fatalf("welcome user %q, want %q: identity from the host's middleware", sse.Welcome.User, user)
	}
	if r := sse.Retry(); r != "2000" {
		t.Errorf("retry: %q, want 2000", r)
	}
	expect(t, sse, "subscribed", room, "")
	id1 := publish(t, ps, room, "m1")
	expectMessage(t, sse, room, "m1", id1)
	time.Sleep(st.settle)
	id2 := publish(t, ps, room, "m2")
	f := expectMessage(t, sse, room, "m2", id2)
	if f.SSEID != id2 {
		t.Fatalf("SSE id %q, want %q", f.SSEID, id2)
	}
	sendUsers(t, ps, user)
	expect(t, sse, "direct", "", "for "+user)
	expectNothingElse(t, ps, sse)

	sse.Close()
	id3, id4 := publish(t, ps, room, "m3"), publish(t, ps, room, "m4")
	h := header.Clone()
	h.Set("Last-Event-ID", id2)
	sse, resp, err = testkit.DialSSE(ep.sse, ep.url+"?room="+url.QueryEscape(room), h)
	if err != nil {
		t.Fatalf("reconnect: %v (%v)", err, status(resp))
	}
	defer sse.Close()
	if err := sse.ReadWelcome(); err != nil {
		t.Fatal(err)
	}
	expectResumed(t, ps, sse, room, id3, id4)
	return works
}

// expectResumed: after the cut, the resumed connection gets exactly what
// was missed (m3, m4), then live messages, then nothing else.
func expectResumed(t *testing.T, ps *pubsub.Broker, c testkit.Client, room, id3, id4 string) {
	t.Helper()
	expect(t, c, "subscribed", room, "")
	expectMessage(t, c, room, "m3", id3)
	expectMessage(t, c, room, "m4", id4)
	id5 := publish(t, ps, room, "m5")
	expectMessage(t, c, room, "m5", id5)
	expectNothingElse(t, ps, c)
}

func status(resp *http.Response) string {
	if resp == nil {
		return "none"
	}
	return fmt.Sprintf("%s %s, Roomcast-Error %q", resp.Proto, resp.Status, resp.Header.Get("Roomcast-Error"))
}

func publish(t *testing.T, ps *pubsub.Broker, room, text string) string {
	t.Helper()
	ack, err := ps.PublishAck(context.Background(), room, testkit.Msg(text))
	if err != nil {
		t.Fatal(err)
	}
	return ack.ID
}

// sendUsers sends one message to user and one to another user, which must
// not arrive.
func sendUsers(t *testing.T, ps *pubsub.Broker, user string) {
	t.Helper()
	for _, u := range []string{user, user + "-other"} {
		if err := ps.SendToUser(context.Background(), u, testkit.Msg("for "+u)); err != nil {
			t.Fatal(err)
		}
	}
}

func expect(t *testing.T, c testkit.Client, typ, room, text string) testkit.Frame {
	t.Helper()
	f := testkit.Next(t, c)
	if f.Type != typ || f.Room != room || f.Text() != text {
		t.Fatalf("got %+v, want %s %q %q", f, typ, room, text)
	}
	return f
}

func expectMessage(t *testing.T, c testkit.Client, room, text, id string) testkit.Frame {
	t.Helper()
	f := expect(t, c, "message", room, text)
	if f.ID != id {
		t.Fatalf("%s: id %q, want %q", text, f.ID, id)
	}
	return f
}

// expectNothingElse sends a marker to the connection, last: nothing may
// arrive before it.
func expectNothingElse(t *testing.T, ps *pubsub.Broker, c testkit.Client) {
	t.Helper()
	if err := ps.SendToConn(context.Background(), c.ConnID(), testkit.Msg("marker")); err != nil {
		t.Fatal(err)
	}
	if got := testkit.Collect(t, c, "marker"); len(got) > 0 {
		t.Fatalf("unexpected frames: %q", testkit.Texts(got))
	}
}

// checkRefusalLogs: every refused cause was logged once at Error (the
// limiter keeps retries out), naming the wrapper and the fix, and nothing
// else was logged at Error.
func checkRefusalLogs(t *testing.T, logs *testkit.Logs) {
	lines := map[string]int{}
	for _, r := range logs.At(slog.LevelError) {
		if !strings.Contains(r.Msg, "cannot work behind the middleware") {
			t.Errorf("unexpected Error line: %s %v", r.Msg, r.Attrs)
			continue
		}
		lines[r.Msg+" "+r.Attrs["writers"]]++
		fix := r.Attrs["fix"]
		switch {
		case strings.Contains(r.Attrs["writers"], "plainLogWriter"):
			if !strings.Contains(fix, "Unwrap") || !strings.Contains(r.Attrs["cause"], "*compat.plainLogWriter") {
				t.Errorf("log line does not name the wrapper and the fix: %v", r.Attrs)
			}
		case strings.Contains(r.Attrs["writers"], "timeoutWriter"):
			if !strings.Contains(fix, "outside http.TimeoutHandler") {
				t.Errorf("log line does not name the fix: %v", r.Attrs)
			}
		default:
			t.Errorf("refusal of an unexpected stack: %v", r.Attrs)
		}
	}
	if len(lines) != 6 { // three stacks, two transports
		t.Errorf("refusal causes logged: %v, want 4", lines)
	}
	for k, n := range lines {
		if n != 1 {
			t.Errorf("%q logged %d times, want once", k, n)
		}
	}
}

const (
	readmeBegin = "<!-- works-with: generated by compat's TestMatrix (go test ./... -run TestMatrix -update in compat/); do not edit -->"
	readmeEnd   = "<!-- /works-with -->"
)

// checkReadme renders the results as README.md's table and compares.
func checkReadme(t *testing.T, results map[cell]outcome) {
	if t.Failed() {
		return
	}
	var b strings.Builder
	b.WriteString(readmeBegin + "\n")
	b.WriteString("| host stack | mount | WebSocket | SSE | note |\n| --- | --- | --- | --- | --- |\n")
	for i, st := range stacks {
		row := []string{st.name, "`" + st.mount + "`"}
		for _, tr := range []string{"WebSocket", "SSE"} {
			row = append(row, summarize(results, i, tr, st.fix))
		}
		row = append(row, st.note)
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	b.WriteString(readmeEnd)
	table := b.String()

	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)" + regexp.QuoteMeta(readmeBegin) + ".*?" + regexp.QuoteMeta(readmeEnd))
	if *update {
		if !re.Match(readme) {
			t.Fatal("README.md has no works-with markers")
		}
		out := re.ReplaceAllLiteral(readme, []byte(table))
		if err := os.WriteFile("../README.md", out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got := re.Find(readme); string(got) != table {
		t.Errorf("README.md's Works with table does not match the matrix; run go test -run TestMatrix -update in compat/. Want:\n%s", table)
	}
}

// summarize is one table cell: the outcome over every variant, in both
// modes.
func summarize(results map[cell]outcome, stack int, transport, fix string) string {
	var ok, no []string
	for _, held := range []bool{false, true} {
		for _, v := range variants {
			name := v.String()
			if held {
				name += " (held)"
			}
			if results[cell{stack, v, transport, held}] == works {
				ok = append(ok, name)
			} else {
				no = append(no, name)
			}
		}
	}
	switch {
	case len(no) == 0:
		return "✔"
	case len(ok) == 0:
		return "✘ refused loudly: " + fix
	}
	return "✔ except " + strings.Join(no, ", ")
}

var slugRE = regexp.MustCompile(`[^A-Za-z0-9]+`)

func slug(s string) string { return strings.Trim(slugRE.ReplaceAllString(s, "-"), "-") }
