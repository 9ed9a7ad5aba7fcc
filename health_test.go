package pubsub_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/testkit"
)

func probe(t *testing.T, h http.Handler) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestReadyWithHistory(t *testing.T) {
	b := newBroker(t, WithHistory("*", History{Messages: 10}))
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if code, body := probe(t, b.ReadyHandler()); code != 200 || body != "ok\n" {
		t.Fatalf("probe: %d %q", code, body)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ready after Close: %v, want ErrClosed", err)
	}
	if code, _ := probe(t, b.ReadyHandler()); code != http.StatusServiceUnavailable {
		t.Fatalf("probe after Close: %d", code)
	}
}

// The NATS server going away makes the broker not ready, with the cause,
// logged once at Warn; its return makes it ready again, also logged.
func TestReadyFollowsNATS(t *testing.T) {
	port := testkit.FreePort(t)
	start := func() *embedded.Server {
		ns, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: port})
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	ns := start()
	logs := &testkit.Logs{}
	b := newBroker(t, WithNATSURL(ns.ClientURL()), WithLogger(logs.Logger()))
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	ns.Shutdown()
	eventually(t, "not ready", func() bool { return errors.Is(b.Ready(ctx), ErrNotReady) })
	err := b.Ready(ctx)
	if !strings.Contains(err.Error(), "NATS connection is") {
		t.Fatalf("not ready without the cause: %v", err)
	}
	code, body := probe(t, b.ReadyHandler())
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "NATS") {
		t.Fatalf("probe while NATS is down: %d %q", code, body)
	}

	ns = start()
	defer ns.Shutdown()
	eventually(t, "ready again", func() bool { return b.Ready(ctx) == nil })
	if n := b.Stats().NATSReconnects; n != 1 {
		t.Fatalf("NATS reconnects %d, want 1", n)
	}
	want := []string{"NATS connection lost", "not ready", "NATS connection back"}
	var warned []string
	for _, r := range logs.At(slog.LevelWarn) {
		warned = append(warned, r.Msg)
	}
	for _, w := range want {
		n := 0
		for _, m := range warned {
			if strings.Contains(m, w) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d Warn lines with %q, want 1; Warn lines: %q", n, w, warned)
		}
	}
}
