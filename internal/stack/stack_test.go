package stack

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type opaque struct{ http.ResponseWriter }

type unwrapping struct{ http.ResponseWriter }

func (w unwrapping) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type flushOnly struct{ http.ResponseWriter }

func (flushOnly) Flush() {}

type hijackOnly struct{ http.ResponseWriter }

func (hijackOnly) Hijack() (net.Conn, *bufio.ReadWriter, error) { return nil, nil, nil }

// delegating is gin's writer: Unwrap, and Hijack and Flush that only call
// the writer behind it.
type delegating struct{ http.ResponseWriter }

func (w delegating) Unwrap() http.ResponseWriter { return w.ResponseWriter }
func (w delegating) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.ResponseWriter.(http.Hijacker).Hijack()
}
func (w delegating) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

// inspect runs f with a real server's ResponseWriter, as a handler would.
func inspect(t *testing.T, wrap func(http.ResponseWriter) http.ResponseWriter, f func(Chain)) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f(Inspect(wrap(w))) }))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestInspect(t *testing.T) {
	cases := []struct {
		name           string
		wrap           func(http.ResponseWriter) http.ResponseWriter
		layers         string
		hijack, flush  bool
		bare           bool
		wsFix, sseFix  string // substrings of the fixes, "" when it works
		wsCause, sseIn string
	}{
		{name: "net/http", wrap: func(w http.ResponseWriter) http.ResponseWriter { return w },
			layers: "*http.response", hijack: true, flush: true, bare: true},
		{name: "unwrapping", wrap: func(w http.ResponseWriter) http.ResponseWriter { return unwrapping{w} },
			layers: "stack.unwrapping → *http.response", hijack: true, flush: true},
		{name: "opaque", wrap: func(w http.ResponseWriter) http.ResponseWriter { return opaque{w} },
			layers: "stack.opaque", wsFix: "Unwrap", sseFix: "Unwrap", wsCause: "stack.opaque", sseIn: "Flush"},
		{name: "flush only", wrap: func(w http.ResponseWriter) http.ResponseWriter { return flushOnly{w} },
			layers: "stack.flushOnly", flush: true, wsFix: "Unwrap", wsCause: "no Hijack"},
		{name: "hijack only", wrap: func(w http.ResponseWriter) http.ResponseWriter { return hijackOnly{w} },
			layers: "stack.hijackOnly", hijack: true},
		{name: "behind an opaque one", wrap: func(w http.ResponseWriter) http.ResponseWriter { return unwrapping{opaque{w}} },
			layers: "stack.unwrapping → stack.opaque", wsFix: "func (w stack.opaque) Unwrap()", sseFix: "stack.opaque"},
		// The methods of a writer in front of an opaque one do not count:
		// they only call into it.
		{name: "delegating in front of an opaque one", wrap: func(w http.ResponseWriter) http.ResponseWriter { return delegating{opaque{w}} },
			layers: "stack.delegating → stack.opaque", wsFix: "stack.opaque", sseFix: "stack.opaque", wsCause: "stack.opaque", sseIn: "stack.opaque"},
		{name: "delegating in front of net/http", wrap: func(w http.ResponseWriter) http.ResponseWriter { return delegating{w} },
			layers: "stack.delegating → *http.response", hijack: true, flush: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inspect(t, tc.wrap, func(c Chain) {
				if got := c.String(); got != tc.layers {
					t.Errorf("layers %q, want %q", got, tc.layers)
				}
				if c.CanHijack != tc.hijack || c.CanFlush != tc.flush || c.Bare() != tc.bare {
					t.Errorf("hijack %v flush %v bare %v", c.CanHijack, c.CanFlush, c.Bare())
				}
				cause, fix := c.Problem(true)
				if (fix == "") != (tc.wsFix == "") || !strings.Contains(fix, tc.wsFix) || !strings.Contains(cause, tc.wsCause) {
					t.Errorf("WebSocket: cause %q fix %q", cause, fix)
				}
				cause, fix = c.Problem(false)
				if (fix == "") != (tc.sseFix == "") || !strings.Contains(fix, tc.sseFix) || !strings.Contains(cause, tc.sseIn) {
					t.Errorf("SSE: cause %q fix %q", cause, fix)
				}
			})
		})
	}
}

func TestTimeoutHandlerIsNamed(t *testing.T) {
	h := http.TimeoutHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := Inspect(w)
		cause, fix := c.Problem(false)
		if !strings.Contains(cause, "http.TimeoutHandler") || !strings.Contains(fix, "outside http.TimeoutHandler") {
			t.Errorf("cause %q fix %q", cause, fix)
		}
	}), 0, "")
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestHeadDropsBodyFraming(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", "12")
	h.Set("Transfer-Encoding", "chunked")
	h.Set("Set-Cookie", "a=b")
	h.Set("Upgrade", "websocket")
	got := string(Head("HTTP/1.1", 101, h))
	if !strings.HasPrefix(got, "HTTP/1.1 101 Switching Protocols\r\n") || !strings.HasSuffix(got, "\r\n\r\n") {
		t.Fatalf("head %q", got)
	}
	for _, k := range []string{"Content-Encoding", "Content-Length", "Transfer-Encoding"} {
		if strings.Contains(got, k) {
			t.Errorf("head keeps %s: %q", k, got)
		}
	}
	for _, k := range []string{"Set-Cookie: a=b", "Upgrade: websocket"} {
		if !strings.Contains(got, k) {
			t.Errorf("head lost %q: %q", k, got)
		}
	}
	if h.Get("Content-Encoding") != "gzip" {
		t.Error("Head changed the caller's header")
	}
}
