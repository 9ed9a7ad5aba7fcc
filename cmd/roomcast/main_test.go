package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/pubsub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a host whose middleware takes the user from a "user" cookie
// and refuses requests without one.
func server(t *testing.T) (*pubsub.Broker, string) {
	t.Helper()
	b, err := pubsub.New(
		pubsub.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		pubsub.WithHistory("chat:*", pubsub.History{Messages: 100}),
		pubsub.WithClientPublish(func(context.Context, string, string) error { return nil }),
		pubsub.WithCall("echo", func(_ context.Context, c pubsub.Call) ([]byte, error) { return c.Data, nil }),
	)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/live", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie("user")
		if err != nil {
			http.Error(w, "log in", http.StatusUnauthorized)
			return
		}
		b.Handler().ServeHTTP(w, r.WithContext(pubsub.ContextWithUser(r.Context(), ck.Value)))
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close(); _ = b.Close() })
	return b, srv.URL + "/live"
}

func cli(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, strings.NewReader("{\"n\":1}\n\n{\"n\":2}\n"), &out, &errOut)
	return out.String(), errOut.String(), err
}

// syncBuffer is written by sub's goroutines while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestPubSubHistoryPresenceCall(t *testing.T) {
	b, url := server(t)
	ctx, cancel := context.WithCancel(context.Background())
	var subOut, subErr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sub", url, "chat:1", "--cookie", "user=alice", "--json", "--transport", "sse"}, nil, &subOut, &subErr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, _ := b.Presence(context.Background(), "chat:1")
		if p.Count == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sub never subscribed: %s", subErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	out, _, err := cli(t, "pub", url, "chat:1", `{"text":"hi"}`, "--cookie", "user=bob")
	if err != nil || !strings.HasPrefix(out, "published to chat:1: #") {
		t.Fatalf("pub: %q %v", out, err)
	}
	if out, _, err = cli(t, "--cookie", "user=bob", "pub", url, "chat:1", "-"); err != nil || strings.Count(out, "published") != 2 {
		t.Fatalf("pub from stdin: %q %v", out, err)
	}
	if _, _, err := cli(t, "pub", url, "chat:1", "not json", "--cookie", "user=bob"); err == nil || !strings.Contains(err.Error(), "--text") {
		t.Fatalf("pub of text without --text: %v", err)
	}
	if out, _, err = cli(t, "pub", url, "chat:1", "plain", "--text", "--cookie", "user=bob"); err != nil {
		t.Fatalf("pub --text: %q %v", out, err)
	}

	// What sub printed: the four messages, in order, as JSON lines.
	var got []string
	for time.Now().Before(deadline) {
		got = strings.Split(strings.TrimSpace(subOut.String()), "\n")
		if len(got) >= 4 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := []string{`{"text":"hi"}`, `{"n":1}`, `{"n":2}`, `"plain"`}
	if len(got) != len(want) {
		t.Fatalf("sub printed %q", got)
	}
	for i, line := range got {
		var m struct {
			Room, ID, From string
			Data           json.RawMessage
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil || m.Room != "chat:1" || m.From != "bob" || string(m.Data) != want[i] || m.ID == "" {
			t.Fatalf("line %d: %s (%v)", i, line, err)
		}
	}

	if out, _, err = cli(t, "history", url, "chat:1", "-n", "2", "--cookie", "user=carol"); err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, `bob: "plain"`) {
		t.Fatalf("history: %q %v", out, err)
	}
	if out, _, err = cli(t, "presence", url, "chat:1", "--cookie", "user=carol"); err != nil || out != "[chat:1] 1 users, 1 connections\n  alice (1)\n" {
		t.Fatalf("presence: %q %v", out, err)
	}
	if out, _, err = cli(t, "call", url, "echo", `{"a":1}`, "--cookie", "user=carol"); err != nil || out != "{\"a\":1}\n" {
		t.Fatalf("call: %q %v", out, err)
	}
	if _, _, err = cli(t, "call", url, "nope", "--cookie", "user=carol"); err == nil || !strings.Contains(err.Error(), "no_handler") {
		t.Fatalf("call of nothing: %v", err)
	}

	cancel() // Ctrl-C
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sub ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sub did not stop")
	}
}

func TestUsageErrors(t *testing.T) {
	_, url := server(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sub", url}, "want 1 more argument"},
		{[]string{"frob", url, "x"}, `unknown command "frob"`},
		{[]string{"sub", url, "lobby", "--header", "nocolon"}, "want \"Name: value\""},
		{[]string{"sub", url, "lobby", "--transport", "carrier-pigeon"}, "auto, websocket or sse"},
		{[]string{"sub", url, "lobby"}, "401"},
		{[]string{"sub", "ftp://x/live", "lobby"}, "not an http(s) URL"},
	} {
		_, _, err := cli(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
}
