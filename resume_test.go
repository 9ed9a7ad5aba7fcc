package pubsub_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
)

func resumeBroker(t *testing.T, opts ...Option) *Broker {
	if os.Getenv("RESUME_LOG") != "" {
		opts = append(opts, WithLogger(slog.Default()))
	}
	return newBroker(t, append([]Option{
		WithHistory("chat:*", History{Messages: 20000}),
		WithHistory("small:*", History{Messages: 3}),
		WithSendQueue(4096, 16<<20),
	}, opts...)...)
}

// publishNumbered publishes n messages "0".."n-1" to room, in order.
func publishNumbered(t *testing.T, b *Broker, room string, from, n int) {
	for i := from; i < from+n; i++ {
		if err := b.Publish(ctx, room, msg(strconv.Itoa(i))); err != nil {
			t.Errorf("publish %d: %v", i, err)
			return
		}
	}
}

// checkSequence asserts got is exactly 0..n-1.
func checkSequence(t *testing.T, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("received %d messages, want %d", len(got), n)
	}
	for i, s := range got {
		if s != strconv.Itoa(i) {
			t.Fatalf("message %d is %q: lost, duplicated or out of order", i, s)
		}
	}
}

// A client drops in the middle of a burst of 10,000 and resumes with its
// last id: it ends with every message exactly once, in order.
func TestResumeMidBurstWebSocket(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{rooms: []string{"chat:burst"}})
	const n = 10000
	done := make(chan struct{})
	go func() { defer close(done); publishNumbered(t, b, "chat:burst", 0, n) }()
	var got []string
	lastID := ""
	for len(got) < 3000 {
		f := c.next(t)
		got = append(got, f.Text())
		lastID = f.ID
	}
	_ = c.Conn.CloseNow() // the network drops, mid-burst

	start := time.Now()
	c2 := dialWS(t, srv, dialOpts{})
	if f := c2.request(t, map[string]any{"type": "subscribe", "room": "chat:burst", "last_id": lastID, "ref": 1}); f.Type != "subscribed" {
		t.Fatalf("resume answered %+v", f)
	}
	for len(got) < n {
		f, err := c2.NextErr(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		if f.Type != "message" {
			t.Fatalf("unexpected %+v", f)
		}
		got = append(got, f.Text())
	}
	t.Logf("resumed %d messages in %v", n-3000, time.Since(start))
	<-done
	checkSequence(t, got, n)
	// Nothing more: a marker published now is the next message.
	_ = b.Publish(ctx, "chat:burst", msg("end"))
	if f := c2.next(t); f.Text() != "end" {
		t.Fatalf("after the burst got %+v", f)
	}
}

func TestResumeMidBurstSSE(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	c := dialSSE(t, srv, dialOpts{rooms: []string{"chat:sse", "lobby"}})
	const n = 10000
	done := make(chan struct{})
	go func() { defer close(done); publishNumbered(t, b, "chat:sse", 0, n) }()
	var got []string
	cursor := ""
	for len(got) < 2500 {
		f := c.next(t)
		got = append(got, f.Text())
		cursor = f.SSEID
	}
	c.Close()

	// What EventSource does on its own: the same URL with Last-Event-ID.
	c2 := dialSSEWithCursor(t, srv, []string{"chat:sse", "lobby"}, cursor)
	for len(got) < n {
		f, err := c2.NextErr(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		if f.Type == "message" {
			got = append(got, f.Text())
		}
	}
	<-done
	checkSequence(t, got, n)
}

// 1,000 clients reconnect at once, each from its own position: each gets
// exactly what it missed, then live messages.
func TestResumeReconnectStorm(t *testing.T) {
	// Clients that caught up wait, not reading, for the others: they
	// cannot answer pings meanwhile (coder/websocket answers while it
	// reads), and under -race the storm can outlast the default 25 s.
	b := resumeBroker(t, WithKeepAlive(2*time.Minute, time.Minute))
	srv := serve(t, b, nil)
	const stored, clients = 200, 1000
	ids := make([]string, stored)
	for i := range stored {
		ack, err := b.PublishAck(ctx, "chat:storm", msg(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = ack.ID
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var mu sync.Mutex
	var caughtUp []*wsClient
	for k := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := k % stored // has 0..from
			c, _, err := dialWSErr(srv, dialOpts{})
			if err != nil {
				errs <- err
				return
			}
			c.send(t, map[string]any{"type": "subscribe", "room": "chat:storm", "last_id": ids[from]})
			for _, typ := range []string{"welcome", "subscribed"} {
				if f, err := c.NextErr(time.Minute); err != nil || f.Type != typ {
					errs <- fmt.Errorf("client from %d: %+v %v, want %s", from, f, err, typ)
					return
				}
			}
			for want := from + 1; want < stored; want++ {
				f, err := c.NextErr(time.Minute)
				if err != nil {
					errs <- fmt.Errorf("client from %d at %d: %v", from, want, err)
					return
				}
				if f.Type != "message" || f.Text() != strconv.Itoa(want) {
					errs <- fmt.Errorf("client from %d: got %+v, want %d", from, f, want)
					return
				}
			}
			mu.Lock()
			caughtUp = append(caughtUp, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d clients resumed (0 to %d messages each) in %v", clients, stored-1, time.Since(start))
	_ = b.Publish(ctx, "chat:storm", msg("live"))
	for _, c := range caughtUp {
		if f := c.next(t); f.Text() != "live" {
			t.Fatalf("after resume got %+v", f)
		}
		_ = c.Conn.CloseNow()
	}
}

func TestResumeOlderThanRetentionIsTruncated(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	var ids []string
	for i := range 10 {
		ack, _ := b.PublishAck(ctx, "small:t", msg(strconv.Itoa(i)))
		ids = append(ids, ack.ID)
	}
	c := dialWS(t, srv, dialOpts{})
	// Position 2: messages 3..6 are gone (the room keeps 3).
	c.send(t, map[string]any{"type": "subscribe", "room": "small:t", "last_id": ids[2], "ref": "r"})
	for _, want := range []string{"subscribed", "truncated"} {
		if f := c.next(t); f.Type != want || f.Room != "small:t" {
			t.Fatalf("got %+v, want %s", f, want)
		}
	}
	_ = b.Publish(ctx, "small:t", msg("live"))
	if f := c.next(t); f.Text() != "live" {
		t.Fatalf("after truncated got %+v", f)
	}
	// The room now keeps 8, 9, live: position 7 is followed directly by
	// what it keeps, so that is a replay.
	c2 := dialWS(t, srv, dialOpts{})
	c2.send(t, map[string]any{"type": "subscribe", "room": "small:t", "last_id": ids[7]})
	c2.next(t) // subscribed
	for _, want := range []string{"8", "9", "live"} {
		if f := c2.next(t); f.Text() != want {
			t.Fatalf("replay got %+v, want %s", f, want)
		}
	}
	// A position past the store's end (the store was reset): truncated.
	c3 := dialWS(t, srv, dialOpts{})
	c3.send(t, map[string]any{"type": "subscribe", "room": "small:t", "last_id": "999999"})
	c3.next(t)
	if f := c3.next(t); f.Type != "truncated" {
		t.Fatalf("future position: %+v", f)
	}
}

func TestResumeRejectsHostileIDs(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	_ = b.Publish(ctx, "chat:h", msg("stored"))
	c := dialWS(t, srv, dialOpts{})
	for _, id := range []string{"abc", "-1", "0", "1e5", "+5", " 5", "0x10", "18446744073709551616", strings.Repeat("9", 40), "1.5"} {
		f := c.request(t, map[string]any{"type": "subscribe", "room": "chat:h", "last_id": id})
		if f.Type != "error" || f.ErrorCode() != "invalid_id" {
			t.Errorf("last_id %q answered %+v", id, f)
		}
	}
	// None of them subscribed anything.
	_ = b.Publish(ctx, "chat:h", msg("leak"))
	sendMarker(t, b, c, "end")
	if got := collect(t, c, "end"); len(got) != 0 {
		t.Fatalf("received %q", texts(got))
	}
	req, _ := http.NewRequest(http.MethodGet, liveURL(srv, "http", []string{"chat:h"}), nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", "not-a-position")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Roomcast-Error") != "invalid_id" {
		t.Fatalf("SSE with a hostile Last-Event-ID: %d %q", resp.StatusCode, resp.Header.Get("Roomcast-Error"))
	}
}

func TestResumeAcrossRestartWithFileStore(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithLogger(quietLogger()), WithHistory("*", History{Messages: 100}), WithStoreDir(dir)}
	b1, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv1 := serve(t, b1, nil)
	c := dialWS(t, srv1, dialOpts{rooms: []string{"room"}})
	publishNumbered(t, b1, "room", 0, 5)
	last := ""
	for range 5 {
		last = c.next(t).ID
	}
	if err := b1.Close(); err != nil { // clients see 1012
		t.Fatal(err)
	}
	b2, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	publishNumbered(t, b2, "room", 5, 5) // published while the client is away
	srv2 := serve(t, b2, nil)
	c2 := dialWS(t, srv2, dialOpts{})
	c2.send(t, map[string]any{"type": "subscribe", "room": "room", "last_id": last})
	c2.next(t)
	for i := 5; i < 10; i++ {
		if f := c2.next(t); f.Text() != strconv.Itoa(i) {
			t.Fatalf("after restart got %+v, want %d", f, i)
		}
	}
	_ = context.Background()
}

// Unsubscribing during a resume stops it; subscribing again does not
// deliver anything twice.
func TestResumeThenUnsubscribeAndResubscribe(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	ids := make([]string, 3000)
	for i := range ids {
		ack, _ := b.PublishAck(ctx, "chat:u", msg(strconv.Itoa(i)))
		ids[i] = ack.ID
	}
	c := dialWS(t, srv, dialOpts{})
	c.send(t, map[string]any{"type": "subscribe", "room": "chat:u", "last_id": ids[0]})
	c.send(t, map[string]any{"type": "unsubscribe", "room": "chat:u", "ref": "u"})
	c.send(t, map[string]any{"type": "subscribe", "room": "chat:u", "last_id": ids[0], "ref": "s"})
	seen := map[string]bool{}
	next := 1
	for next < 3000 {
		f := c.next(t)
		if f.Type != "message" {
			continue
		}
		if seen[f.ID] {
			t.Fatalf("message %s delivered twice", f.Text())
		}
		seen[f.ID] = true
		if n, _ := strconv.Atoi(f.Text()); n == next {
			next++
		} else if n < next {
			t.Fatalf("out of order: %d after %d", n, next-1)
		}
	}
	_ = b.Publish(ctx, "chat:u", msg("live"))
	for {
		f := c.next(t)
		if f.Type == "message" {
			if f.Text() != "live" || seen[f.ID] {
				t.Fatalf("after the replay: %+v", f)
			}
			return
		}
	}
}

// Retention drops messages while a slow client is being replayed to: the
// client may lose them, but never silently: a jump in the sequence comes
// after a "truncated".
func TestResumeDropsDuringReplayAreNotSilent(t *testing.T) {
	b := newBroker(t, WithHistory("*", History{Messages: 1500}), WithSendQueue(8192, 64<<20)) // room for the live burst: this test is about the replay
	srv := serve(t, b, nil)
	pad := strings.Repeat("x", 2048)
	publish := func(from, n int) {
		for i := from; i < from+n; i++ {
			_ = b.Publish(ctx, "mid", []byte(`{"text":"`+strconv.Itoa(i)+`","pad":"`+pad+`"}`))
		}
	}
	first, _ := b.PublishAck(ctx, "mid", []byte(`{"text":"0"}`))
	publish(1, 1499)
	c := dialWS(t, srv, dialOpts{})
	c.send(t, map[string]any{"type": "subscribe", "room": "mid", "last_id": first.ID})
	time.Sleep(300 * time.Millisecond) // not reading: the replay waits
	publish(1500, 1500)                // the room drops everything the replay has not reached
	expect, truncated := 1, false
	for expect < 3000 {
		f, err := c.NextErr(20 * time.Second)
		if err != nil {
			t.Fatalf("at %d: %v", expect, err)
		}
		switch f.Type {
		case "truncated":
			truncated = true
		case "message":
			n, _ := strconv.Atoi(f.Text())
			if n < expect {
				t.Fatalf("%d again after %d", n, expect-1)
			}
			if n > expect && !truncated {
				t.Fatalf("silent gap: %d after %d with no truncated", n, expect-1)
			}
			expect, truncated = n+1, false
		}
	}
}

// Over SSE, a truncated room does not go live ahead of the others' replay:
// the stream's ids never go backwards, so Last-Event-ID stays a cursor.
func TestSSEResumeIDsNeverGoBackwards(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	var small []string
	for i := range 10 {
		ack, _ := b.PublishAck(ctx, "small:s", msg("s"+strconv.Itoa(i)))
		small = append(small, ack.ID)
		_ = b.Publish(ctx, "chat:c", msg("c"+strconv.Itoa(i)))
	}
	c := dialSSEWithCursor(t, srv, []string{"small:s", "chat:c"}, small[1])
	last := uint64(0)
	read := func(want func(frame) bool) {
		t.Helper()
		for {
			f := c.next(t)
			if f.Type == "message" {
				id, _ := strconv.ParseUint(f.SSEID, 10, 64)
				if id <= last {
					t.Fatalf("SSE id %d after %d", id, last)
				}
				last = id
			}
			if want(f) {
				return
			}
		}
	}
	// chat:c replays c1..c9 (after the cursor, which is s1); small:s kept
	// only s7..s9: truncated.
	truncated, chat := false, 0
	read(func(f frame) bool {
		truncated = truncated || (f.Type == "truncated" && f.Room == "small:s")
		if f.Type == "message" && f.Room == "chat:c" {
			chat++
		}
		return truncated && chat == 9
	})
	for i := range 5 {
		_ = b.Publish(ctx, "small:s", msg("live"+strconv.Itoa(i)))
		_ = b.Publish(ctx, "chat:c", msg("live"+strconv.Itoa(i)))
	}
	n := 0
	read(func(f frame) bool {
		if f.Type == "message" && strings.HasPrefix(f.Text(), "live") {
			n++
		}
		return n == 10
	})
}
