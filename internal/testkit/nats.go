package testkit

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/embedded"
)

// StartNATS starts an embedded NATS server (with JetStream when asked),
// listening on a free loopback port, for the test's life.
func StartNATS(tb testing.TB, jetStream bool) *embedded.Server {
	tb.Helper()
	srv, err := embedded.Start(embedded.Options{JetStream: jetStream, Host: "127.0.0.1", Port: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv
}

// Connect is a client connection to srv for the test's life.
func Connect(tb testing.TB, srv *embedded.Server) *nats.Conn {
	tb.Helper()
	nc, err := srv.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Eventually polls cond until it holds, failing the test after Wait.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(Wait)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
