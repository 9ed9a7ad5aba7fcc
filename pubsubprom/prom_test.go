package pubsubprom_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
	"github.com/roomcast/pubsub/pubsubprom"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A scrape reports what happened over real sockets, under names that pass
// Prometheus's own lint.
func TestMetricsOverRealSockets(t *testing.T) {
	ps, err := pubsub.New(pubsub.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	mux := http.NewServeMux()
	mux.Handle("/live", pubsub.Identify(func(r *http.Request) string { return r.Header.Get("X-User") })(ps.Handler()))
	mux.Handle("/metrics", pubsubprom.Handler(ps))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	const clients, msgs = 3, 7
	var conns []*testkit.WS
	for i := range clients {
		c, _, err := testkit.DialWS(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/live?room=lobby",
			&websocket.DialOptions{HTTPHeader: http.Header{"X-User": {string(rune('a' + i))}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Cut()
		// DialWS read the welcome; publishes after "subscribed" reach it.
		if f, err := c.NextErr(testkit.Wait); err != nil || f.Type != "subscribed" {
			t.Fatalf("got %+v %v, want subscribed", f, err)
		}
		conns = append(conns, c)
	}
	for range msgs {
		if err := ps.Publish(context.Background(), "lobby", []byte(`{"n":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		for got := 0; got < msgs; {
			f, err := c.NextErr(testkit.Wait)
			if err != nil {
				t.Fatal(err)
			}
			if f.Type == "message" {
				got++
			}
		}
	}
	var body string
	testkit.Eventually(t, "deliveries in the scrape", func() bool {
		body = scrape(t, srv.URL+"/metrics")
		return strings.Contains(body, "\nroomcast_deliveries_total 21\n")
	})
	for _, want := range []string{
		`roomcast_connections{transport="websocket"} 3`,
		`roomcast_connections{transport="sse"} 0`,
		`roomcast_rooms 1`,
		`roomcast_published_messages_total{source="server"} 7`,
		`roomcast_published_messages_total{source="client"} 0`,
		`roomcast_denied_total{kind="subscribe"} 0`,
		`roomcast_slow_consumer_closes_total 0`,
		`roomcast_delivery_delay_seconds_bucket{le="+Inf"} `,
		`roomcast_resume_duration_seconds_count 0`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, "\n"+want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	problems, err := testutil.CollectAndLint(pubsubprom.NewCollector(ps))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(pubsubprom.NewCollector(ps)); n != 25 {
		t.Errorf("%d metrics, want 25 (one per kind and label value)", n)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return "\n" + string(b)
}

// The core package must not link client_golang: only this package does.
func TestCoreDoesNotImportPrometheus(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/roomcast/pubsub").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "prometheus") {
		t.Fatal("package pubsub depends on prometheus")
	}
}
