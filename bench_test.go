package pubsub

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub/internal/wire"
)

// BenchmarkFrameEncode is the per-message cost of building the client frame,
// paid once per message per instance, whatever the number of subscribers.
func BenchmarkFrameEncode(b *testing.B) {
	env := wire.Envelope{ID: "k2Fz8qLw0P-1234", Data: []byte(`{"b":1,"s":42,"t":1763712000000000000,"p":"xxxxxxxxxxxxxxx"}`)}
	b.ReportAllocs()
	for b.Loop() {
		_ = wire.MessageFrame(wire.KindRoom, "lobby", env)
	}
}

// BenchmarkFanout is the in-memory fan-out of one message to the local
// members of a room: one op is one delivery (an enqueue on a connection,
// and the writer taking it off the queue). It must not allocate.
func BenchmarkFanout(b *testing.B) {
	for _, members := range []int{10, 1000, 10000} {
		b.Run(strconv.Itoa(members), func(b *testing.B) {
			br := &Broker{cfg: config{queueMessages: DefaultQueueMessages, queueBytes: DefaultQueueBytes}}
			t := &topic{members: make(map[*Conn]struct{})}
			conns := make([]*Conn, members)
			for i := range conns {
				conns[i] = &Conn{b: br, sse: &sseStream{wake: make(chan struct{}, 1)}}
				t.members[conns[i]] = struct{}{}
			}
			f := wire.MessageFrame(wire.KindRoom, "lobby", wire.Envelope{ID: "x-1", Data: []byte(`{"text":"hi"}`)})
			var slow []*Conn
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += members {
				slow = t.fanout(f, slow)
				if i%(8*members) == 0 { // the writers drain every few messages
					for _, c := range conns {
						if batch, _ := c.takeQueue(); batch != nil {
							c.returnBatch(batch)
						}
					}
				}
			}
			if len(slow) > 0 {
				b.Fatal("a member overflowed")
			}
		})
	}
}

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
	var total atomic.Int64
	for _, c := range conns {
		go func() {
			n := 0
			for n < msgs {
				_, p, err := c.Read(ctx)
				if err != nil {
					break
				}
				k := bytes.Count(p, []byte("\n")) + 1
				n += k
				total.Add(int64(k))
			}
			received <- n
		}()
	}
	b.ResetTimer()
	start := time.Now()
	data := []byte(`{"text":"hello, subscribers"}`)
	for i := range msgs {
		// Stay within the send queues: a client reading slower than we
		// publish would rightly be closed as a slow consumer.
		for int64(i-256)*clients > total.Load() {
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
