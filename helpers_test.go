package pubsub_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// The root package's tests are black-box: they use the public API, the
// shared test clients of internal/testkit, and the few hooks of
// export_test.go. What follows only adapts testkit to their habits.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = testkit.Wait

var ctx = context.Background()

type (
	frame  = testkit.Frame
	client = testkit.Client
)

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

// wsClient is a real WebSocket client over loopback.
type wsClient struct{ *testkit.WS }

// dialWSErr connects without reading anything.
func dialWSErr(srv *httptest.Server, o dialOpts) (*wsClient, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, o.url(srv, "ws"), &websocket.DialOptions{HTTPHeader: o.header()})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(1 << 24)
	return &wsClient{&testkit.WS{Conn: c}}, resp, nil
}

// dialWS connects and reads the welcome frame and one "subscribed" (or
// error) frame per query room.
func dialWS(t *testing.T, srv *httptest.Server, o dialOpts) *wsClient {
	t.Helper()
	c, _, err := dialWSErr(srv, o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(c.Cut)
	c.Welcome = c.next(t)
	if c.Welcome.Type != "welcome" || c.Welcome.Conn == "" {
		t.Fatalf("first frame = %+v, want welcome", c.Welcome)
	}
	for range o.rooms {
		if f := c.next(t); f.Type != "subscribed" && f.Type != "error" {
			t.Fatalf("frame = %+v, want subscribed", f)
		}
	}
	return c
}

func (c *wsClient) next(t *testing.T) frame { t.Helper(); return testkit.Next(t, c) }

func (c *wsClient) send(t *testing.T, v any) {
	t.Helper()
	if err := c.Send(v); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// request sends a frame and returns the next frame, its answer.
func (c *wsClient) request(t *testing.T, v any) frame {
	t.Helper()
	c.send(t, v)
	return c.next(t)
}

// sseClient is a real SSE client over loopback.
type sseClient struct{ *testkit.SSE }

func dialSSEErr(srv *httptest.Server, o dialOpts) (*sseClient, *http.Response, error) {
	c, resp, err := testkit.DialSSE(srv.Client(), o.url(srv, "http"), o.header())
	if err != nil {
		return nil, resp, err
	}
	return &sseClient{c}, resp, nil
}

// dialSSE connects and reads the welcome and one "subscribed" per query
// room; presence frames read meanwhile stay for the test to read.
func dialSSE(t *testing.T, srv *httptest.Server, o dialOpts) *sseClient {
	t.Helper()
	c, resp, err := dialSSEErr(srv, o)
	if err != nil {
		t.Fatalf("SSE dial: %v", err)
	}
	t.Cleanup(c.Close)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	if err := c.ReadWelcome(); err != nil {
		t.Fatal(err)
	}
	var presence []frame
	for range o.rooms {
		f, err := c.NextErr(waitFor)
		for err == nil && f.Type == "presence" { // after a subscribed, for the test to read
			presence = append(presence, f)
			f, err = c.NextErr(waitFor)
		}
		if err != nil || f.Type != "subscribed" {
			t.Fatalf("event = %+v, want subscribed", f)
		}
	}
	for i := len(presence) - 1; i >= 0; i-- {
		c.Unread(presence[i])
	}
	return c
}

func (c *sseClient) next(t *testing.T) frame { t.Helper(); return testkit.Next(t, c) }

// dialSSEWithCursor reconnects as EventSource does: with Last-Event-ID.
func dialSSEWithCursor(t *testing.T, hs *httptest.Server, rooms []string, cursor string) *sseClient {
	t.Helper()
	c, resp, err := testkit.DialSSE(hs.Client(), liveURL(hs, "http", rooms), http.Header{"Last-Event-ID": {cursor}})
	if err != nil {
		t.Fatalf("SSE reconnect: %v (%v)", err, resp)
	}
	t.Cleanup(c.Close)
	return &sseClient{c}
}

// collect reads frames until the marker message and returns those before
// it (see testkit.Collect).
func collect(t *testing.T, c client, marker string) []frame {
	t.Helper()
	return testkit.Collect(t, c, marker)
}

// sendMarker sends a marker to one connection, after everything else.
func sendMarker(t *testing.T, b *Broker, c client, marker string) {
	t.Helper()
	if err := b.SendToConn(context.Background(), c.ConnID(), msg(marker)); err != nil {
		t.Fatal(err)
	}
}

func msg(text string) []byte { return testkit.Msg(text) }

func texts(fs []frame) []string { return testkit.Texts(fs) }

// expectOnly sends a marker to c and checks that exactly want (texts())
// arrived before it.
func expectOnly(t *testing.T, b *Broker, c client, want ...string) {
	t.Helper()
	sendMarker(t, b, c, "end")
	if got := texts(collect(t, c, "end")); !slices.Equal(got, want) {
		t.Fatalf("received %q, want %q", got, want)
	}
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
	testkit.Eventually(t, what, cond)
}

// truncate shortens hostile names in test output.
func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	return fmt.Sprintf("%.64s…", s)
}

// historyStream is the broker's history stream, seen through a NATS client
// of its embedded server.
func historyStream(t *testing.T, b *Broker) jetstream.Stream {
	t.Helper()
	nc, err := EmbeddedServer(b).Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "ROOMCAST_HISTORY")
	if err != nil {
		t.Fatal(err)
	}
	return stream
}
