package pubsub

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 5 * time.Second

type roleKey struct{}

// testAuth is the host's own middleware of the tests: the user comes from
// the X-User header (as a session cookie would give it) and a role, a
// host-private value, from X-Role.
func testAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if u := r.Header.Get("X-User"); u != "" {
			ctx = ContextWithUser(ctx, u)
		}
		if role := r.Header.Get("X-Role"); role != "" {
			ctx = context.WithValue(ctx, roleKey{}, role)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newBroker(t *testing.T, opts ...Option) *Broker {
	t.Helper()
	b, err := New(append([]Option{WithLogger(quietLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// serve mounts h (default: b.Handler()) at /live behind testAuth.
func serve(t *testing.T, b *Broker, h http.Handler) *httptest.Server {
	t.Helper()
	if h == nil {
		h = b.Handler()
	}
	mux := http.NewServeMux()
	mux.Handle("/live", testAuth(h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// frame is any server frame, decoded loosely.
type frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Room    string          `json:"room"`
	To      string          `json:"to"`
	From    string          `json:"from"`
	Conn    string          `json:"conn"`
	User    string          `json:"user"`
	Code    json.RawMessage `json:"code"`
	Message string          `json:"message"`
	Reason  string          `json:"reason"`
	Ref     json.RawMessage `json:"ref"`
	Data    json.RawMessage `json:"data"`
	Count   int             `json:"count"` // presence
	Conns   int             `json:"conns"`
	Next    string          `json:"next"`
	Members []Member        `json:"members"`
	SSEID   string          `json:"-"` // the SSE "id:" field
}

func (f frame) code() string { return strings.Trim(string(f.Code), `"`) }

// text returns the "text" field of a message's data.
func (f frame) text() string {
	var d struct{ Text string }
	_ = json.Unmarshal(f.Data, &d)
	return d.Text
}

type client interface {
	next(t *testing.T) frame
	connID() string
}

// wsClient is a real WebSocket client over loopback.
type wsClient struct {
	c       *websocket.Conn
	welcome frame
	pending []frame
}

type dialOpts struct {
	user, role, origin string
	rooms              []string
	presence           []string // rooms whose presence events to ask for at connect time
}

func (o dialOpts) url(srv *httptest.Server, scheme string) string {
	u := liveURL(srv, scheme, o.rooms)
	for _, r := range o.presence {
		u += "&presence=" + url.QueryEscape(r)
	}
	return u
}

func liveURL(srv *httptest.Server, scheme string, rooms []string) string {
	u, _ := url.Parse(srv.URL + "/live")
	if u.Scheme == "https" { // a TLS server: https, wss
		scheme += "s"
	}
	u.Scheme = scheme
	q := url.Values{}
	for _, r := range rooms {
		q.Add("room", r)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func (o dialOpts) header() http.Header {
	h := http.Header{}
	if o.user != "" {
		h.Set("X-User", o.user)
	}
	if o.role != "" {
		h.Set("X-Role", o.role)
	}
	if o.origin != "" {
		h.Set("Origin", o.origin)
	}
	return h
}

func dialWSErr(srv *httptest.Server, o dialOpts) (*wsClient, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, o.url(srv, "ws"), &websocket.DialOptions{HTTPHeader: o.header()})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(1 << 24)
	return &wsClient{c: c}, resp, nil
}

// dialWS connects and reads the welcome frame and one "subscribed" (or
// error) frame per query room.
func dialWS(t *testing.T, srv *httptest.Server, o dialOpts) *wsClient {
	t.Helper()
	c, _, err := dialWSErr(srv, o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.c.CloseNow() })
	c.welcome = c.next(t)
	if c.welcome.Type != "welcome" || c.welcome.Conn == "" {
		t.Fatalf("first frame = %+v, want welcome", c.welcome)
	}
	for range o.rooms {
		if f := c.next(t); f.Type != "subscribed" && f.Type != "error" {
			t.Fatalf("frame = %+v, want subscribed", f)
		}
	}
	return c
}

func (c *wsClient) connID() string { return c.welcome.Conn }

func (c *wsClient) nextErr(d time.Duration) (frame, error) {
	if len(c.pending) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, p, err := c.c.Read(ctx)
		if err != nil {
			return frame{}, err
		}
		for _, line := range strings.Split(string(p), "\n") {
			var f frame
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				return frame{}, fmt.Errorf("bad frame %q: %v", line, err)
			}
			c.pending = append(c.pending, f)
		}
	}
	f := c.pending[0]
	c.pending = c.pending[1:]
	return f, nil
}

func (c *wsClient) next(t *testing.T) frame {
	t.Helper()
	f, err := c.nextErr(waitFor)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return f
}

func (c *wsClient) send(t *testing.T, v any) {
	t.Helper()
	var p []byte
	switch v := v.(type) {
	case string:
		p = []byte(v)
	default:
		p, _ = json.Marshal(v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, p); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// request sends a frame and returns the next frame, its answer.
func (c *wsClient) request(t *testing.T, v any) frame {
	t.Helper()
	c.send(t, v)
	return c.next(t)
}

// sseClient is a real SSE client over loopback: an HTTP GET whose body is
// parsed as an event stream.
type sseClient struct {
	resp    *http.Response
	cancel  context.CancelFunc
	events  chan frame
	done    chan struct{}
	welcome frame
	pending []frame // read by dialSSE, not yet by the test
	mu      sync.Mutex
	raw     strings.Builder // every line read, for keep-alive checks
}

func dialSSEErr(srv *httptest.Server, o dialOpts) (*sseClient, *http.Response, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, o.url(srv, "http"), nil)
	req.Header = o.header()
	req.Header.Set("Accept", "text/event-stream")
	resp, err := srv.Client().Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		return nil, resp, fmt.Errorf("status %d", resp.StatusCode)
	}
	c := &sseClient{resp: resp, cancel: cancel, events: make(chan frame, 100000), done: make(chan struct{})}
	go c.read()
	return c, resp, nil
}

func dialSSE(t *testing.T, srv *httptest.Server, o dialOpts) *sseClient {
	t.Helper()
	c, resp, err := dialSSEErr(srv, o)
	if err != nil {
		t.Fatalf("SSE dial: %v", err)
	}
	t.Cleanup(c.close)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	c.welcome = c.next(t)
	if c.welcome.Type != "welcome" {
		t.Fatalf("first event = %+v, want welcome", c.welcome)
	}
	for range o.rooms {
		f, err := c.readEvent(waitFor)
		for err == nil && f.Type == "presence" { // after a subscribed, for the test to read
			c.pending = append(c.pending, f)
			f, err = c.readEvent(waitFor)
		}
		if err != nil || f.Type != "subscribed" {
			t.Fatalf("event = %+v, want subscribed", f)
		}
	}
	return c
}

func (c *sseClient) read() {
	defer close(c.done)
	defer close(c.events)
	sc := bufio.NewScanner(c.resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		c.raw.WriteString(line + "\n")
		c.mu.Unlock()
		switch {
		case line == "":
			if data != "" {
				var f frame
				_ = json.Unmarshal([]byte(data), &f)
				f.SSEID = id
				c.events <- f
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
}

func (c *sseClient) close() {
	c.cancel()
	c.resp.Body.Close()
	<-c.done
}

func (c *sseClient) connID() string { return c.welcome.Conn }

func (c *sseClient) nextErr(d time.Duration) (frame, error) {
	if len(c.pending) > 0 {
		f := c.pending[0]
		c.pending = c.pending[1:]
		return f, nil
	}
	return c.readEvent(d)
}

func (c *sseClient) readEvent(d time.Duration) (frame, error) {
	select {
	case f, ok := <-c.events:
		if !ok {
			return frame{}, io.EOF
		}
		return f, nil
	case <-time.After(d):
		return frame{}, errors.New("timeout")
	}
}

func (c *sseClient) next(t *testing.T) frame {
	t.Helper()
	f, err := c.nextErr(waitFor)
	if err != nil {
		t.Fatalf("SSE read: %v", err)
	}
	return f
}

func (c *sseClient) rawText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw.String()
}

// collect reads frames until the marker message (data {"text":marker})
// and returns the frames before it. Because one broker delivers everything
// in the order NATS gave it, a marker sent last proves that nothing else
// is on its way: what is not in the result was not delivered.
func collect(t *testing.T, c client, marker string) []frame {
	t.Helper()
	var got []frame
	for {
		f := c.next(t)
		if (f.Type == "direct" || f.Type == "message") && f.text() == marker {
			return got
		}
		got = append(got, f)
	}
}

// sendMarker sends a marker to one connection, after everything else.
func sendMarker(t *testing.T, b *Broker, c client, marker string) {
	t.Helper()
	if err := b.SendToConn(context.Background(), c.connID(), msg(marker)); err != nil {
		t.Fatal(err)
	}
}

func msg(text string) []byte {
	p, _ := json.Marshal(map[string]string{"text": text})
	return p
}

func texts(fs []frame) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.Type+":"+f.Room+":"+f.text())
	}
	return out
}

// receipt is what a client must have received before a marker, as texts()
// joined with ",".
type receipt struct {
	c    client
	want string
}

// expectUntil checks every client's frames up to marker.
func expectUntil(t *testing.T, marker string, cases map[string]receipt) {
	t.Helper()
	for name, tc := range cases {
		if got := strings.Join(texts(collect(t, tc.c, marker)), ","); got != tc.want {
			t.Errorf("%s received %q, want %q", name, got, tc.want)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialSSEWithCursor reconnects as EventSource does: with Last-Event-ID.
func dialSSEWithCursor(t *testing.T, hs *httptest.Server, rooms []string, cursor string) *sseClient {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, liveURL(hs, "http", rooms), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", cursor)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	c := &sseClient{resp: resp, cancel: func() {}, events: make(chan frame, 100000), done: make(chan struct{})}
	go c.read()
	t.Cleanup(c.close)
	return c
}
