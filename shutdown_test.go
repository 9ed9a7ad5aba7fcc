package pubsub_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/embedded"
	"go.uber.org/goleak"
)

// Shutdown past its deadline must not touch an HTTP/2 SSE stream whose
// handler has returned (its ResponseWriter is gone).
func TestShutdownDeadlineSkipsFinishedStreams(t *testing.T) {
	b, err := New(WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/live", testAuth(b.Handler()))
	h2 := httptest.NewUnstartedServer(mux)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()
	h1 := serve(t, b, nil)
	stuck, _, err := dialWSErr(h1, dialOpts{}) // never reads: its close handshake outlasts the deadline
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Conn.CloseNow()
	sse := dialSSE(t, h2, dialOpts{})
	if sse.Resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d", sse.Resp.ProtoMajor)
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := b.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
}

// A hijacked SSE stream whose start fails (the NATS link is gone) ends
// once, with one close event.
func TestSSEStartFailureEndsOnce(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	b := newBroker(t, WithNATSConn(nc))
	nc.Close()
	srv := serve(t, b, nil)
	req, _ := http.NewRequest(http.MethodGet, liveURL(srv, "http", nil), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-User", "alice")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	closes := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"type":"close"`) {
			closes++
		}
	}
	if closes != 1 {
		t.Fatalf("%d close events, want 1", closes)
	}
}

// A host handler that returns without driving its connection does not hold
// Shutdown past its deadline.
func TestShutdownFinishesUndrivenConnections(t *testing.T) {
	b, err := New(WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := b.Accept(w, r)
		if err != nil {
			return
		}
		if err := c.Join("bad room"); err != nil {
			return // the bug being survived: c is never driven
		}
		_ = c.Wait()
	}))
	c, _, err := dialWSErr(srv, dialOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Conn.CloseNow()
	eventually(t, "the connection to be registered", func() bool { return ConnCount(b) == 1 })
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Shutdown(sctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown hung on an undriven connection")
	}
}

func TestShutdownDrainsAndTellsClientsToReconnect(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b, err := New(WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/live", testAuth(b.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ws := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
	sse := dialSSE(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
	for i := range 100 {
		_ = b.Publish(ctx, "r", msg(fmt.Sprint(i)))
	}
	// Wait until the broker has queued them, then shut down: all 100 must
	// still be delivered, then the close.
	eventually(t, "messages to be dispatched", func() bool {
		return Dispatched(b, "r", 100) // received from NATS, and fanned out
	})
	time.Sleep(10 * time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- b.Shutdown(sctx) }()

	for i := range 100 {
		if f := ws.next(t); f.Text() != fmt.Sprint(i) {
			t.Fatalf("ws message %d = %+v", i, f)
		}
		if f := sse.next(t); f.Text() != fmt.Sprint(i) {
			t.Fatalf("sse message %d = %+v", i, f)
		}
	}
	if _, err := ws.NextErr(waitFor); websocket.CloseStatus(err) != CloseServiceRestart {
		t.Fatalf("WebSocket ended with %v, want close %d", err, CloseServiceRestart)
	}
	if f := sse.next(t); f.Type != "close" || string(f.Code) != "1012" {
		t.Fatalf("SSE last event = %+v, want close 1012", f)
	}
	if _, err := sse.NextErr(waitFor); err == nil {
		t.Fatal("SSE stream did not end")
	}
	if err := <-shutdownErr; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := b.Publish(ctx, "r", msg("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Shutdown = %v", err)
	}
	if _, resp, err := dialSSEErr(srv, dialOpts{}); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connect after Shutdown: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_ = ws.Conn.CloseNow()
	sse.Close()
	srv.Close()
}

// A Shutdown whose context ends first still closes every connection and
// returns, with the context's error.
func TestShutdownTimeoutForcesConnectionsClosed(t *testing.T) {
	b, err := New(WithLogger(quietLogger()), WithSendQueue(4096, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, b, nil)
	stuck := dialWS(t, srv, dialOpts{rooms: []string{"r"}}) // never reads again
	big := []byte(`"` + strings.Repeat("x", 60<<10) + `"`)
	for range 300 {
		_ = b.Publish(ctx, "r", big)
	}
	eventually(t, "messages to be dispatched", func() bool {
		return Dispatched(b, "r", 100) // received from NATS, and fanned out
	})
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := b.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v after its deadline", d)
	}
	_ = stuck.Conn.CloseNow()
}
