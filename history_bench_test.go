package pubsub_test

import (
	"context"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/embedded"

	"github.com/coder/websocket"
)

// BenchmarkPublish compares a room without history (straight to NATS) with
// rooms whose messages are stored before Publish returns.
func BenchmarkPublish(b *testing.B) {
	data := []byte(`{"text":"hello, room","n":12345}`)
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"plain", nil},
		{"history-memory", []Option{WithHistory("*", History{Messages: 1000})}},
		{"history-file", []Option{WithHistory("*", History{Messages: 1000}), WithStoreDir(b.TempDir())}},
		{"history-file-sync", []Option{WithHistory("*", History{Messages: 1000}), WithStoreDir(b.TempDir()), WithEmbedded(embedded.Options{SyncAlways: true})}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			br, err := New(append([]Option{WithLogger(quietLogger())}, tc.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			b.ReportAllocs()
			for b.Loop() {
				if err := br.Publish(context.Background(), "bench", data); err != nil {
					b.Fatal(err)
				}
			}
		})
		// Throughput: 16 publishers at once, whose acknowledgements overlap.
		b.Run(tc.name+"-16-publishers", func(b *testing.B) {
			br, err := New(append([]Option{WithLogger(quietLogger())}, tc.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			b.SetParallelism(8) // × GOMAXPROCS 2
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := br.Publish(context.Background(), "bench", data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkResume is the time from a resuming subscribe to the last missed
// message at the client, for a gap of 1k and 100k messages.
func BenchmarkResume(b *testing.B) {
	for _, gap := range []int{1000, 100000} {
		b.Run(strconv.Itoa(gap), func(b *testing.B) {
			br, err := New(WithLogger(quietLogger()), WithHistory("*", History{Messages: gap + 10}), WithSendQueue(4096, 16<<20))
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			ctx := context.Background()
			first, _ := br.PublishAck(ctx, "room", []byte(`{"n":-1}`))
			for i := range gap {
				if err := br.Publish(ctx, "room", []byte(`{"n":`+strconv.Itoa(i)+`}`)); err != nil {
					b.Fatal(err)
				}
			}
			srv := httptest.NewServer(br.Handler())
			defer srv.Close()
			b.ResetTimer()
			for b.Loop() {
				c, _, err := websocket.Dial(ctx, "ws"+srv.URL[4:], nil)
				if err != nil {
					b.Fatal(err)
				}
				c.SetReadLimit(1 << 20)
				start := time.Now()
				_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","room":"room","last_id":"`+first.ID+`"}`))
				got := -2 // welcome, subscribed
				for got < gap {
					_, p, err := c.Read(ctx)
					if err != nil {
						b.Fatal(err)
					}
					for _, ch := range p {
						if ch == '\n' {
							got++
						}
					}
					got++
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/resume")
				_ = c.CloseNow()
			}
		})
	}
}
