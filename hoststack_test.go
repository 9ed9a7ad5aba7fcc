package pubsub

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

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
		if !strings.Contains(l.Attrs["cause"], "pubsub.hiding") || !strings.Contains(l.Attrs["fix"], "Unwrap") {
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
		if f := c.next(t); f.Type != "message" || f.text() != "hi" {
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
	if f := c.next(t); f.Type != "message" || f.text() != "after the deadline" {
		t.Fatalf("got %+v", f)
	}
	c.close()
	start := time.Now()
	eventually(t, "the stream to end when its client left", func() bool {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return len(b.conns) == 0
	})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the departure was noticed after %v", d)
	}
}

// The deprecated names still work, for one release.
func TestDeprecatedContextHelpers(t *testing.T) {
	ctx := WithUser(context.Background(), "alice")
	if UserFrom(ctx) != "alice" || UserFromContext(ctx) != "alice" {
		t.Fatal("WithUser and UserFromContext disagree")
	}
	if UserFromContext(context.Background()) != "" {
		t.Fatal("an anonymous context has a user")
	}
}
