package pubsub_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// Goroutines return to their baseline once connections close, an idle
// connection holds no writer goroutine, and room subscriptions are released.
func TestGoroutinesAndSubscriptionsReturnToBaseline(t *testing.T) {
	// A hijacked SSE stream learns that its client left at the next
	// keep-alive check (WebSocket clients here read only now and then, so
	// their pong deadline is long).
	b := newBroker(t, WithKeepAlive(100*time.Millisecond, time.Minute))
	srv := serve(t, b, nil)
	warm := dialWS(t, srv, dialOpts{user: "warm", rooms: []string{"r"}})
	_ = warm.Conn.Close(websocket.StatusNormalClosure, "")
	eventually(t, "warm-up connection to close", func() bool { return ConnCount(b) == 0 })
	if err := FlushNATS(b); err != nil { // the server has processed the UNSUBs
		t.Fatal(err)
	}
	baseSubs := EmbeddedServer(b).NATS().NumSubscriptions()
	base := runtime.NumGoroutine()

	const n = 20
	var wsc []*wsClient
	var ssec []*sseClient
	for i := range n {
		wsc = append(wsc, dialWS(t, srv, dialOpts{user: fmt.Sprint("w", i%5), rooms: []string{"r", fmt.Sprint("room", i)}}))
		ssec = append(ssec, dialSSE(t, srv, dialOpts{user: fmt.Sprint("s", i%5), rooms: []string{"r"}}))
	}
	_ = b.Publish(ctx, "r", msg("to all"))
	for _, c := range wsc {
		if f := testkit.Next(t, c); f.Text() != "to all" {
			t.Fatalf("got %+v", f)
		}
	}
	for _, c := range ssec {
		if f := testkit.Next(t, c); f.Text() != "to all" {
			t.Fatalf("got %+v", f)
		}
	}
	// Idle: a WebSocket holds one goroutine, its reader; a (hijacked) SSE
	// stream none; no writer goroutine is left.
	eventually(t, "idle connections to hold no writer", func() bool {
		return goroutinesIn("pubsub.(*wsConn).readLoop") == n && goroutinesIn("pubsub.(*sseStream).writeLoop") == 0 &&
			goroutinesIn("fanout.(*Queue).writeLoop") == 0
	})
	// 1 room "r", 20 rooms "roomN", 10 users.
	if got := EmbeddedServer(b).NATS().NumSubscriptions() - baseSubs; got != 31 {
		t.Fatalf("NATS subscriptions: %d more than baseline, want 31 (one per room and user)", got)
	}

	for _, c := range wsc {
		_ = c.Conn.Close(websocket.StatusNormalClosure, "bye")
	}
	for _, c := range ssec {
		c.Close()
	}
	eventually(t, "goroutines to return to baseline", func() bool { return runtime.NumGoroutine() <= base })
	eventually(t, "subscriptions to return to baseline", func() bool { return EmbeddedServer(b).NATS().NumSubscriptions() == baseSubs })
	if TopicCount(b) != 0 || ConnCount(b) != 0 {
		t.Fatalf("%d topics and %d connections left", TopicCount(b), ConnCount(b))
	}
}

// goroutinesIn counts the goroutines whose stack contains fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
