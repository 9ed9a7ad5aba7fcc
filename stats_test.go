package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// N clients in a room and M messages give exactly N×M deliveries, and
// every gauge says what is open; after the clients leave the gauges are
// back to zero and the counters keep their totals.
func TestStatsCountExactly(t *testing.T) {
	// A hijacked SSE stream learns its client left at its keep-alive.
	b := newBroker(t, WithClientPublish(func(context.Context, string, string) error { return nil }),
		WithKeepAlive(100*time.Millisecond, 5*time.Second))
	srv := serve(t, b, nil)
	const wsN, sseN, m = 4, 2, 25
	var clients []client
	var wss []*wsClient
	var sses []*sseClient
	for i := range wsN {
		c := dialWS(t, srv, dialOpts{user: fmt.Sprint("w", i), rooms: []string{"r"}})
		wss = append(wss, c)
		clients = append(clients, c)
	}
	for i := range sseN {
		c := dialSSE(t, srv, dialOpts{user: fmt.Sprint("s", i), rooms: []string{"r", "side"}})
		sses = append(sses, c)
		clients = append(clients, c)
	}
	st := b.Stats()
	if st.WebSocketConns != wsN || st.SSEConns != sseN || st.Rooms != 2 {
		t.Fatalf("gauges: %d ws, %d sse, %d rooms; want %d, %d, 2", st.WebSocketConns, st.SSEConns, st.Rooms, wsN, sseN)
	}
	if want := []RoomSubscribers{{"r", wsN + sseN}, {"side", sseN}}; fmt.Sprint(st.TopRooms) != fmt.Sprint(want) {
		t.Fatalf("top rooms %v, want %v", st.TopRooms, want)
	}
	for i := range m - 1 {
		if err := b.Publish(ctx, "r", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	// One message from a client: counted as a client publish.
	wss[0].send(t, map[string]any{"type": "publish", "room": "r", "data": map[string]string{"text": "last"}})
	for _, c := range clients {
		for got := 0; got < m; {
			if f := testkit.Next(t, c); f.Type == "message" {
				got++
			}
		}
	}
	eventually(t, "every delivery written", func() bool {
		return b.Stats().Deliveries == int64(len(clients)*m) && b.Stats().WrittenFrames >= b.Stats().Deliveries
	})
	st = b.Stats()
	if st.PublishedServer != m-1 || st.PublishedClient != 1 {
		t.Fatalf("published %d by Go, %d by clients; want %d, 1", st.PublishedServer, st.PublishedClient, m-1)
	}
	if st.Writes == 0 || st.Writes > st.WrittenFrames || st.WrittenBytes < st.Deliveries*20 {
		t.Fatalf("writes %d, frames %d, bytes %d for %d deliveries", st.Writes, st.WrittenFrames, st.WrittenBytes, st.Deliveries)
	}
	if st.DeliveryDelay.Count == 0 || st.DeliveryDelay.Count > uint64(st.Writes) {
		t.Fatalf("delivery delay observed %d times for %d writes", st.DeliveryDelay.Count, st.Writes)
	}
	if st.QueueHighWater < 1 || st.SlowConsumers != 0 {
		t.Fatalf("queue high water %d, slow consumers %d", st.QueueHighWater, st.SlowConsumers)
	}
	for kind, n := range st.Denied {
		if n != 0 {
			t.Fatalf("denied %s = %d with nothing denied", kind, n)
		}
	}
	for _, c := range wss {
		c.Cut()
	}
	for _, c := range sses {
		c.Close()
	}
	eventually(t, "connection gauges back to zero", func() bool {
		s := b.Stats()
		return s.WebSocketConns == 0 && s.SSEConns == 0 && s.Rooms == 0
	})
	if after := b.Stats(); after.Deliveries != st.Deliveries || after.PublishedServer != st.PublishedServer {
		t.Fatal("counters went back")
	}
}

// Each kind of refusal counts once, under its own name only.
func TestStatsCountDenials(t *testing.T) {
	b := newBroker(t,
		WithSubscribeAuth(func(_ context.Context, _, room string) error {
			if room == "secret" {
				return ErrForbidden
			}
			return nil
		}),
		WithOriginPatterns("app.example"),
	)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "secret"}); f.ErrorCode() != "forbidden" {
		t.Fatalf("subscribe secret: %+v", f)
	}
	if f := c.request(t, map[string]any{"type": "publish", "room": "open", "data": 1}); f.ErrorCode() != "forbidden" {
		t.Fatalf("publish without WithClientPublish: %+v", f)
	}
	if _, resp, err := dialWSErr(srv, dialOpts{user: "u", origin: "https://evil.example"}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", err, resp)
	}
	want := map[string]int64{"subscribe": 1, "publish": 1, "origin": 1, "history": 0, "presence": 0, "misconfigured": 0}
	if got := b.Stats().Denied; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("denied %v, want %v", got, want)
	}
}

// A client that stops reading is closed as a slow consumer: counted once,
// and logged once at Warn with its user, rooms and queue.
func TestStatsSlowConsumerCountedAndLogged(t *testing.T) {
	logs := &testkit.Logs{}
	b := newBroker(t, WithLogger(logs.Logger()), WithSendQueue(16, 1<<20), WithWriteTimeout(time.Minute))
	srv := serve(t, b, nil)
	slow := dialWS(t, srv, dialOpts{user: "sloth", rooms: []string{"r", "q"}})
	_ = slow // reads nothing from here on
	big := `{"pad":"` + strings.Repeat("x", 60<<10) + `"}`
	for i := 0; b.Stats().SlowConsumers == 0; i++ {
		if i == 2000 {
			t.Fatal("2000 messages of 60 KiB and the client was never closed")
		}
		if err := b.Publish(ctx, "r", []byte(big)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the slow connection to end", func() bool { return b.Stats().WebSocketConns == 0 })
	if n := b.Stats().SlowConsumers; n != 1 {
		t.Fatalf("slow consumers %d, want 1", n)
	}
	var warned []testkit.Record
	for _, r := range logs.At(slog.LevelWarn) {
		if strings.Contains(r.Msg, "slow consumer") {
			warned = append(warned, r)
		}
	}
	if len(warned) != 1 {
		t.Fatalf("%d slow-consumer Warn lines, want 1: %+v", len(warned), warned)
	}
	a := warned[0].Attrs
	if a["user"] != "sloth" || a["rooms"] != "[q r]" || a["queue_limit"] != "16" || a["queued"] == "" {
		t.Fatalf("slow-consumer line attrs %v", a)
	}
	for _, r := range logs.At(slog.LevelInfo) {
		if r.Level == slog.LevelInfo {
			t.Fatalf("Info line in steady state: %q %v", r.Msg, r.Attrs)
		}
	}
}

// With WithoutStats the gauges still say what is open; counters stay 0.
func TestStatsOff(t *testing.T) {
	b := newBroker(t, WithoutStats())
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
	if err := b.Publish(ctx, "r", msg("x")); err != nil {
		t.Fatal(err)
	}
	c.next(t)
	st := b.Stats()
	if st.Counting || st.WebSocketConns != 1 || st.Rooms != 1 || st.Deliveries != 0 || st.PublishedServer != 0 || st.Writes != 0 {
		t.Fatalf("stats off: %+v", st)
	}
}

// ClusterStats has one entry per instance on the NATS system, each with
// its own numbers, and is bounded by its context.
func TestClusterStatsEveryInstance(t *testing.T) {
	ns := testkit.StartNATS(t, false)
	b1 := newBroker(t, WithNATSURL(ns.ClientURL()))
	b2 := newBroker(t, WithNATSURL(ns.ClientURL()))
	other := newBroker(t, WithNATSURL(ns.ClientURL()), WithNamespace("otherapp"))
	_ = other
	srv1, srv2 := serve(t, b1, nil), serve(t, b2, nil)
	dialWS(t, srv1, dialOpts{user: "a", rooms: []string{"r"}})
	dialSSE(t, srv2, dialOpts{user: "b", rooms: []string{"r"}})
	dialSSE(t, srv2, dialOpts{user: "c", rooms: []string{"r"}})
	eventually(t, "both instances in presence", func() bool {
		all, err := b1.ClusterStats(timeout(t, time.Second))
		return err == nil && len(all) == 2
	})
	all, err := b1.ClusterStats(timeout(t, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	byInstance := map[string]Stats{}
	for _, s := range all {
		byInstance[s.Instance] = s
	}
	s1, s2 := byInstance[b1.Stats().Instance], byInstance[b2.Stats().Instance]
	if s1.WebSocketConns != 1 || s1.SSEConns != 0 || s2.WebSocketConns != 0 || s2.SSEConns != 2 {
		t.Fatalf("cluster stats %+v", all)
	}
	dead, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b1.ClusterStats(dead); !errors.Is(err, context.Canceled) {
		t.Fatalf("ClusterStats on an ended context: %v", err)
	}
}

func timeout(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(cancel)
	return c
}
