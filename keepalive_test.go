package pubsub_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
)

func TestKeepAlive(t *testing.T) {
	b := newBroker(t, WithKeepAlive(50*time.Millisecond, time.Second)) // a generous pong wait: CI machines stall
	ended := make(chan error, 4)
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := b.Accept(w, r)
		if err == nil {
			ended <- c.Wait()
		}
	}))
	// A client that answers pings (its reader is running) stays connected.
	alive := dialWS(t, srv, dialOpts{rooms: []string{"r"}})
	frames := make(chan frame, 1)
	go func() {
		f, _ := alive.NextErr(2 * time.Second)
		frames <- f
	}()
	time.Sleep(400 * time.Millisecond) // several keep-alive rounds
	_ = b.Publish(ctx, "r", msg("still there"))
	if f := <-frames; f.Text() != "still there" {
		t.Fatalf("live client got %+v", f)
	}

	// A client that never reads never answers a ping: closed with ErrIdleTimeout.
	silent, _, err := dialWSErr(srv, dialOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Conn.CloseNow()
	select {
	case err := <-ended:
		if !errors.Is(err, ErrIdleTimeout) {
			t.Fatalf("silent client ended with %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("silent client was not closed")
	}

	// SSE: comment lines keep the stream open.
	sse := dialSSE(t, srv, dialOpts{})
	eventually(t, "an SSE keep-alive comment", func() bool { return strings.Contains(sse.Raw(), "\n:\n") })
}
