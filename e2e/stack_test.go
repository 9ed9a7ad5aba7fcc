package e2e

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/pubsub"
)

// opaqueLogWriter is a request logger's writer without Unwrap: it hides
// the connection from the live handler.
type opaqueLogWriter struct{ http.ResponseWriter }

// A server whose middleware hides the connection refuses loudly, and the
// browser client reports it once and stops, instead of retrying forever.
func TestBrowserReportsMisconfiguredServerAndStops(t *testing.T) {
	ps := newBroker(t)
	var requests atomic.Int64
	srv := libServer(t, ps, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			next.ServeHTTP(opaqueLogWriter{w}, r)
		})
	})
	b := newTab(t)
	b.open(srv.URL + "/?rooms=lobby")
	b.waitFor("misconfigured error", `events.some(e => e.kind === "error" && e.code === "misconfigured")`)
	b.waitFor("closed", `live.state === "closed"`)
	seen := requests.Load()
	time.Sleep(time.Second) // the client's backoff here is 50–500 ms: it would have retried
	if n := requests.Load(); n != seen {
		t.Fatalf("the client kept trying: %d requests after the error, %d before", n-seen, seen)
	}
	var errs int
	b.eval(`events.filter(e => e.kind === "error").length`, &errs)
	if errs != 1 {
		t.Fatalf("%d error events, want 1", errs)
	}
}

// unwrapWriter is a wrapper done right, which also records the response
// head the browser got.
type unwrapWriter struct {
	http.ResponseWriter
	seen func(http.Header)
}

func (w unwrapWriter) WriteHeader(code int) {
	w.seen(w.Header().Clone())
	w.ResponseWriter.WriteHeader(code)
}
func (w unwrapWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// A stream written through the host's writers (WithHoldRequests) behind a
// wrapper carries "Content-Encoding: identity", which keeps compressing
// middleware away from it: a real browser's EventSource must accept it.
func TestBrowserAcceptsHeldSSEStreamThroughWrappers(t *testing.T) {
	ps := newBroker(t, pubsub.WithHoldRequests())
	var mu sync.Mutex
	var encodings []string
	srv := libServer(t, ps, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(unwrapWriter{w, func(h http.Header) {
				if h.Get("Content-Type") == "text/event-stream" {
					mu.Lock()
					encodings = append(encodings, h.Get("Content-Encoding"))
					mu.Unlock()
				}
			}}, r)
		})
	})
	b := newTab(t)
	b.open(srv.URL + "/?rooms=lobby&transport=sse")
	b.waitFor("open over SSE", `live.state === "open" && live.transport === "sse"`)
	b.waitFor("subscription", subscribedTo("lobby", 1))
	publish(t, ps, "lobby", "through the wrapper")
	b.waitFor("message", received("lobby", "through the wrapper"))
	mu.Lock()
	defer mu.Unlock()
	if len(encodings) == 0 || encodings[0] != "identity" {
		t.Fatalf("SSE responses' Content-Encoding: %q, want identity", encodings)
	}
}
