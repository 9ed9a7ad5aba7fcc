package pubsub_test

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"

	"github.com/roomcast/pubsub/internal/testkit"
)

// hiding is a request logger's writer without Unwrap.
type hiding struct{ http.ResponseWriter }

// A middleware that hides the connection gets a clear refusal on both
// transports and on the probe, never a 101 followed by silence, and one
// log line per cause however often clients retry.
func TestHiddenConnectionIsRefusedLoudly(t *testing.T) {
	logs := &testkit.Logs{}
	b := newBroker(t, WithLogger(logs.Logger()))
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { b.Handler().ServeHTTP(hiding{w}, r) }))
	for range 3 {
		_, resp, err := dialWSErr(srv, dialOpts{rooms: []string{"lobby"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Roomcast-Error") != "misconfigured" {
			t.Fatalf("WebSocket through a hiding writer: %v %+v", err, resp)
		}
		_, resp, err = dialSSEErr(srv, dialOpts{rooms: []string{"lobby"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Roomcast-Error") != "misconfigured" {
			t.Fatalf("SSE through a hiding writer: %v %+v", err, resp)
		}
		head, err := http.Head(srv.URL + "/live")
		if err != nil || head.StatusCode != http.StatusInternalServerError || head.Header.Get("Roomcast-Error") != "misconfigured" {
			t.Fatalf("probe through a hiding writer: %v %+v", err, head)
		}
	}
	lines := logs.At(slog.LevelError)
	if len(lines) != 2 {
		t.Fatalf("logged %d Error lines, want one per transport: %+v", len(lines), lines)
	}
	for _, l := range lines {
		if !strings.Contains(l.Attrs["cause"], "pubsub_test.hiding") || !strings.Contains(l.Attrs["fix"], "Unwrap") {
			t.Errorf("the line does not name the wrapper and the fix: %+v", l)
		}
	}
}

// holdingWriter holds WriteHeader back until the body starts, as gin's
// writer and compressing middlewares do, and forwards the rest.
type holdingWriter struct {
	http.ResponseWriter
	code int
}

func (w *holdingWriter) WriteHeader(code int) { w.code = code }

func (w *holdingWriter) Write(p []byte) (int, error) {
	if w.code != 0 {
		w.ResponseWriter.WriteHeader(w.code)
		w.code = 0
	}
	return w.ResponseWriter.Write(p)
}

func (w *holdingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *holdingWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// The upgrade does not depend on the host's writers passing the 101 on:
// the broker writes the response head itself.
func TestUpgradeThroughAWriterThatHoldsTheStatus(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Handler().ServeHTTP(&holdingWriter{ResponseWriter: w}, r)
	}))
	ws := dialWS(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	sse := dialSSE(t, srv, dialOpts{user: "bob", rooms: []string{"lobby"}})
	if err := b.Publish(ctx, "lobby", msg("hi")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []client{ws, sse} {
		if f := testkit.Next(t, c); f.Type != "message" || f.Text() != "hi" {
			t.Fatalf("got %+v", f)
		}
	}
}

// A request deadline set by middleware (chi's Timeout) does not end a
// stream written through the host's writers; the client's departure still
// does, promptly.
func TestStreamOutlivesAMiddlewareDeadline(t *testing.T) {
	b := newBroker(t, WithHoldRequests())
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 100*time.Millisecond)
		defer cancel()
		b.Handler().ServeHTTP(w, r.WithContext(ctx))
	}))
	c := dialSSE(t, srv, dialOpts{user: "alice", rooms: []string{"lobby"}})
	time.Sleep(300 * time.Millisecond)
	if err := b.Publish(ctx, "lobby", msg("after the deadline")); err != nil {
		t.Fatal(err)
	}
	if f := testkit.Next(t, c); f.Type != "message" || f.Text() != "after the deadline" {
		t.Fatalf("got %+v", f)
	}
	c.Close()
	start := time.Now()
	eventually(t, "the stream to end when its client left", func() bool {
		return ConnCount(b) == 0
	})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the departure was noticed after %v", d)
	}
}

// The broker takes HTTP/1.1 SSE connections over; what the host's
// middleware put in the response headers must survive that. Over HTTP/2,
// where a connection cannot be taken over, the handler streams itself.
func TestSSEKeepsHostHeadersAndWorksOverHTTP2(t *testing.T) {
	b := newBroker(t)
	mux := http.NewServeMux()
	mux.Handle("/live", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "refreshed"})
		w.Header().Set("Access-Control-Allow-Origin", "https://app.example")
		testAuth(b.Handler()).ServeHTTP(w, r)
	}))
	for _, h2 := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(mux)
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		defer srv.Close()
		c := dialSSE(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
		if want := map[bool]int{false: 1, true: 2}[h2]; c.Resp.ProtoMajor != want {
			t.Fatalf("HTTP/%d, want %d", c.Resp.ProtoMajor, want)
		}
		if got := c.Resp.Header.Get("Set-Cookie"); !strings.Contains(got, "session=refreshed") {
			t.Errorf("HTTP/%d: Set-Cookie %q lost", c.Resp.ProtoMajor, got)
		}
		if got := c.Resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
			t.Errorf("HTTP/%d: CORS header %q lost", c.Resp.ProtoMajor, got)
		}
		_ = b.Publish(ctx, "r", msg("over tls"))
		if f := c.next(t); f.Text() != "over tls" {
			t.Fatalf("HTTP/%d: got %+v", c.Resp.ProtoMajor, f)
		}
		c.Close()
	}
}
