package pubsub

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/pubsub/embedded"
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
	defer stuck.c.CloseNow()
	sse := dialSSE(t, h2, dialOpts{})
	if sse.resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d", sse.resp.ProtoMajor)
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
	defer c.c.CloseNow()
	eventually(t, "the connection to be registered", func() bool { b.mu.RLock(); defer b.mu.RUnlock(); return len(b.conns) == 1 })
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

// HEAD with query rooms answers what an SSE request would, naming the room.
func TestProbeNamesTheRefusedRoom(t *testing.T) {
	b := newBroker(t, WithSubscribeAuth(func(ctx context.Context, user, room string) error {
		if room == "secret" {
			return errors.New("no")
		}
		return nil
	}))
	srv := serve(t, b, nil)
	for _, tc := range []struct {
		rooms      []string
		status     int
		code, room string
	}{
		{nil, http.StatusNoContent, "", ""},
		{[]string{"lobby"}, http.StatusNoContent, "", ""},
		{[]string{"lobby", "secret"}, http.StatusForbidden, "forbidden", "secret"},
		{[]string{"a.b"}, http.StatusBadRequest, "invalid_room", "a.b"},
	} {
		resp, err := http.Head(liveURL(srv, "http", tc.rooms))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Roomcast-Error") != tc.code || resp.Header.Get("Roomcast-Room") != tc.room {
			t.Errorf("HEAD %v: %d %q %q", tc.rooms, resp.StatusCode, resp.Header.Get("Roomcast-Error"), resp.Header.Get("Roomcast-Room"))
		}
	}
}
