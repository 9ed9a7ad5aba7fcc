package client_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/client"
	"github.com/roomcast/pubsub/internal/testkit"
)

// Two instances of an app on one NATS: when the client's instance shuts
// down (1012), it moves to the other and resumes its room there from the
// shared store: every message once, in order.
func TestMovesToAnotherInstance(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			nats := testkit.StartNATS(t, true)
			var brokers []*pubsub.Broker
			var urls []string
			for range 2 {
				b, err := pubsub.New(pubsub.WithLogger(quiet()), pubsub.WithNATSURL(nats.ClientURL()),
					pubsub.WithHistory("chat:*", pubsub.History{Messages: 100}))
				if err != nil {
					t.Fatal(err)
				}
				srv := httptest.NewServer(pubsub.Identify(func(r *http.Request) string { return r.Header.Get("X-User") })(b.Handler()))
				t.Cleanup(func() { srv.CloseClientConnections(); srv.Close(); _ = b.Close() })
				brokers, urls = append(brokers, b), append(urls, srv.URL)
			}
			c := dial(t, urls[0], "frank", tr.t, &client.Options{URLs: urls[1:]})
			ctx := ctxT(t)
			sub, err := c.Subscribe(ctx, "chat:9")
			if err != nil {
				t.Fatal(err)
			}
			msgs := pull(t, sub.Messages(ctx))
			if _, err := brokers[1].PublishAck(ctx, "chat:9", text("m0")); err != nil {
				t.Fatal(err)
			}
			if m := next(t, msgs); textOf(m) != "m0" {
				t.Fatalf("got %q", textOf(m))
			}
			if err := brokers[0].Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			for i := 1; i < 4; i++ {
				if _, err := brokers[1].PublishAck(ctx, "chat:9", text(fmt.Sprint("m", i))); err != nil {
					t.Fatal(err)
				}
			}
			_, _ = brokers[1].PublishAck(ctx, "chat:9", text("end"))
			if got := textsUntil(t, msgs, "end"); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
				t.Fatalf("after the move: %q", got)
			}
			if conns, _ := brokers[1].UserConns(ctx, "frank"); len(conns) != 1 || conns[0].ID != c.Conn() {
				t.Fatalf("frank's connections: %+v, client's %s", conns, c.Conn())
			}
		})
	}
}
