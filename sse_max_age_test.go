package pubsub_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// An SSE client that stops reading in a quiet room cannot be told from one
// that reads (EventSource sends nothing): the stream's maximum age ends it,
// whether the broker took the connection over or a host handler drives it.
func TestSSEMaxAgeEndsANonReader(t *testing.T) {
	for _, driven := range []bool{false, true} {
		t.Run(map[bool]string{false: "taken over", true: "driven by Accept"}[driven], func(t *testing.T) {
			const age = 1500 * time.Millisecond
			b := newBroker(t, WithSSEMaxAge(age), WithKeepAlive(100*time.Millisecond, time.Second))
			var h http.Handler
			ended := make(chan error, 1)
			if driven {
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					c, err := b.Accept(w, r)
					if err == nil {
						ended <- c.Wait()
					}
				})
			}
			srv := serve(t, b, h)
			start := time.Now() // before the stream exists: its age counts from later
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /live?room=quiet HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nX-User: idle\r\n\r\n")
			// The client reads nothing from here on: the stream must end by itself.
			eventually(t, "the stream to open", func() bool { return b.Stats().SSEConns == 1 })
			time.Sleep(time.Until(start.Add(age * 8 / 10))) // before the earliest end (a tenth of jitter)
			if n := b.Stats().SSEConns; n != 1 {
				t.Fatalf("stream ended after %v, before its age", time.Since(start))
			}
			eventually(t, "the aged stream to end", func() bool { return b.Stats().SSEConns == 0 })
			if took := time.Since(start); took > age+time.Second {
				t.Errorf("ended after %v, want at most age + a keep-alive", took)
			}
			if driven {
				if err := <-ended; !errors.Is(err, ErrStreamMaxAge) {
					t.Errorf("Conn.Err = %v, want ErrStreamMaxAge", err)
				}
			}
			// What was written: the head, the welcome, comments and then the
			// close event that tells the client to reconnect, then the end.
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			const closeEvent = `{"type":"close","code":1012,"reason":"stream age"}`
			var rest []byte
			buf := make([]byte, 4096)
			for !strings.Contains(string(rest), closeEvent) {
				n, err := conn.Read(buf)
				rest = append(rest, buf[:n]...)
				if err != nil {
					t.Fatalf("no close event 1012 in %q: %v", tail(string(rest)), err)
				}
			}
		})
	}
}

// A reading client ended at its age reconnects with its last id and misses
// nothing of a history room, not even what was published in between.
func TestSSEMaxAgeResumesLosslessly(t *testing.T) {
	b := newBroker(t, WithSSEMaxAge(time.Second), WithKeepAlive(100*time.Millisecond, time.Second),
		WithHistory("h:*", History{Messages: 100}))
	srv := serve(t, b, nil)
	c := dialSSE(t, srv, dialOpts{rooms: []string{"h:1"}})
	if _, err := b.PublishAck(ctx, "h:1", msg("one")); err != nil {
		t.Fatal(err)
	}
	var last string
	for f := testkit.Next(t, c); ; f = testkit.Next(t, c) {
		if f.Type == "message" {
			if f.Text() != "one" {
				t.Fatalf("got %q", f.Text())
			}
			last = f.SSEID
			continue
		}
		if f.Type == "close" {
			if f.ErrorCode() != "1012" {
				t.Fatalf("close %+v, want 1012", f)
			}
			break
		}
	}
	// Published while the client is away.
	if _, err := b.PublishAck(ctx, "h:1", msg("two")); err != nil {
		t.Fatal(err)
	}
	again := dialSSEWithCursor(t, srv, []string{"h:1"}, last)
	if _, err := b.PublishAck(ctx, "h:1", msg("three")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range collect(t, again, "three") {
		if f.Type == "message" {
			got = append(got, f.Text())
		}
	}
	if strings.Join(got, ",") != "two" {
		t.Fatalf("after the reconnect got %v, want [two] then three", got)
	}
}

// WithSSEMaxAge(0) removes the bound (here, one set before it).
func TestSSEMaxAgeZeroKeepsStreams(t *testing.T) {
	b := newBroker(t, WithSSEMaxAge(300*time.Millisecond), WithSSEMaxAge(0), WithKeepAlive(50*time.Millisecond, time.Second))
	srv := serve(t, b, nil)
	c := dialSSE(t, srv, dialOpts{rooms: []string{"r"}})
	time.Sleep(time.Second)
	if err := b.Publish(ctx, "r", msg("still")); err != nil {
		t.Fatal(err)
	}
	if f := testkit.Next(t, c); f.Text() != "still" {
		t.Fatalf("got %+v", f)
	}
}

func tail(s string) string {
	if len(s) > 300 {
		return "…" + s[len(s)-300:]
	}
	return s
}
