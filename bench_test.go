package pubsub_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"

	"github.com/coder/websocket"
)

// BenchmarkPublishWebSocket is the whole path over real sockets: Publish,
// NATS, dispatch, fan-out, the writer, loopback TCP, and a WebSocket client
// reading. One op is one delivery.
func BenchmarkPublishWebSocket(b *testing.B) {
	const clients = 100
	br, err := New(WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	srv := httptest.NewServer(br.Handler())
	defer srv.Close()
	ctx := context.Background()
	received := make(chan int, clients)
	var conns []*websocket.Conn
	for range clients {
		c, _, err := websocket.Dial(ctx, "ws"+srv.URL[4:]+"?room=bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		c.SetReadLimit(1 << 20) // a message joins up to 64 KiB of frames
		conns = append(conns, c)
		for lines := 0; lines < 2; { // welcome, subscribed: maybe in one message
			_, p, err := c.Read(ctx)
			if err != nil {
				b.Fatal(err)
			}
			lines += bytes.Count(p, []byte("\n")) + 1
		}
	}
	msgs := max(b.N/clients, 1)
	counts := make([]atomic.Int64, clients)
	for i, c := range conns {
		go func() {
			n := 0
			for n < msgs {
				_, p, err := c.Read(ctx)
				if err != nil {
					break
				}
				n += bytes.Count(p, []byte("\n")) + 1
				counts[i].Store(int64(n))
			}
			received <- n
		}()
	}
	// slowest is what the slowest client has read.
	slowest := func() int64 {
		low := counts[0].Load()
		for i := range counts {
			low = min(low, counts[i].Load())
		}
		return low
	}
	b.ResetTimer()
	start := time.Now()
	data := []byte(`{"text":"hello, subscribers"}`)
	for i := range msgs {
		// Stay within the send queues: a client reading slower than we
		// publish would rightly be closed as a slow consumer.
		for i%64 == 0 && int64(i-512) > slowest() {
			time.Sleep(50 * time.Microsecond)
		}
		if err := br.Publish(ctx, "bench", data); err != nil {
			b.Fatal(err)
		}
	}
	for range clients {
		if n := <-received; n != msgs {
			b.Fatalf("a client got %d of %d", n, msgs)
		}
	}
	b.ReportMetric(float64(msgs*clients)/time.Since(start).Seconds(), "deliveries/s")
	for _, c := range conns {
		_ = c.CloseNow()
	}
}
