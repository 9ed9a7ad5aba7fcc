package compat

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// lockedBuffer is an access log a test can read while handlers write it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) text() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// chi's access log line: `"GET ... HTTP/1.1" from ... - 200 1234B in 301.5ms`.
var accessLine = regexp.MustCompile(`"GET [^"]*/live[^"]*" from \S+ - (\d{3}) (\d+)B in (\S+)$`)

type access struct {
	status int
	bytes  int
	took   time.Duration
}

// accessLogOf opens one connection of transport through chi's Logger, keeps
// it open for hold with a message on the way, closes it, and returns the
// access log's line for it.
func accessLogOf(t *testing.T, held bool, transport string, hold time.Duration) access {
	opts := []pubsub.Option{pubsub.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}
	if held {
		opts = append(opts, pubsub.WithHoldRequests())
	}
	ps, err := pubsub.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	logs := &lockedBuffer{}
	r := chi.NewRouter()
	r.Use(chimw.RequestLogger(&chimw.DefaultLogFormatter{Logger: log.New(logs, "", 0), NoColor: true}))
	r.With(auth).Handle("/live", ps.Handler())
	srv := httptest.NewServer(r)
	defer srv.Close()
	header := http.Header{"Cookie": {"session=alice"}}
	var c interface{ Close() }
	var client testkit.Client
	if transport == "WebSocket" {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
		defer cancel()
		ws, _, err := testkit.DialWS(ctx, "ws"+srv.URL[4:]+"/live?room=lobby", &websocket.DialOptions{HTTPHeader: header})
		if err != nil {
			t.Fatal(err)
		}
		c, client = closer(func() { _ = ws.Conn.Close(websocket.StatusNormalClosure, "") }), ws
	} else {
		sse, _, err := testkit.DialSSE(nil, srv.URL+"/live?room=lobby", header)
		if err != nil {
			t.Fatal(err)
		}
		if err := sse.ReadWelcome(); err != nil {
			t.Fatal(err)
		}
		c, client = sse, sse
	}
	expect(t, client, "subscribed", "lobby", "")
	time.Sleep(hold)
	if err := ps.Publish(context.Background(), "lobby", testkit.Msg("hello")); err != nil {
		t.Fatal(err)
	}
	expect(t, client, "message", "lobby", "hello")
	c.Close()
	var line string
	deadline := time.Now().Add(testkit.Wait)
	for line == "" {
		for _, l := range logs.lines() {
			if accessLine.MatchString(l) {
				line = l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access log line: %q", logs.lines())
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := accessLine.FindStringSubmatch(line)
	var a access
	a.status, _ = strconv.Atoi(m[1])
	a.bytes, _ = strconv.Atoi(m[2])
	a.took, _ = time.ParseDuration(strings.ReplaceAll(m[3], "µ", "u"))
	t.Logf("held=%v %s: %s", held, transport, line)
	return a
}

type closer func()

func (f closer) Close() { f() }

// With WithHoldRequests, a host's access log sees a live connection as
// what it is; by default it records the handshake only.
func TestAccessLogs(t *testing.T) {
	const hold = 300 * time.Millisecond
	sse := accessLogOf(t, true, "SSE", hold)
	if sse.status != 200 || sse.bytes < 100 || sse.took < hold {
		t.Errorf("held SSE stream logged as %+v: want 200, its bytes, at least %v", sse, hold)
	}
	// A WebSocket's status never reaches the host's writers (the broker
	// writes the 101 itself, so no wrapper can hold it back): chi logs 0.
	ws := accessLogOf(t, true, "WebSocket", hold)
	if ws.status != 0 || ws.took < hold {
		t.Errorf("held WebSocket logged as %+v: want status 0, at least %v", ws, hold)
	}
	for _, tr := range []string{"SSE", "WebSocket"} {
		if a := accessLogOf(t, false, tr, hold); a.status != 0 || a.bytes != 0 || a.took >= hold {
			t.Errorf("taken-over %s logged as %+v: want the handshake only (status 0, 0 bytes, at once)", tr, a)
		}
	}
}
