package pubsub

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// Batches are bounded in bytes: large stored messages are all read, and the
// newest come back from History.
func TestHistoryWithLargeMessages(t *testing.T) {
	b := newBroker(t, WithHistory("*", History{Messages: 200}))
	pad := strings.Repeat("x", 60<<10)
	for i := range 150 {
		if err := b.Publish(ctx, "big", []byte(`{"text":"`+strconv.Itoa(i)+`","pad":"`+pad+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.History(ctx, "big", 3)
	if err != nil || len(got) != 3 || !strings.Contains(string(got[2].Data), `"text":"149"`) || !strings.Contains(string(got[0].Data), `"text":"147"`) {
		t.Fatalf("History: %d messages, %v", len(got), err)
	}
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{})
	first, _ := b.History(ctx, "big", 150) // under MaxHistoryLimit: all of them
	c.send(t, map[string]any{"type": "subscribe", "room": "big", "last_id": first[0].ID})
	c.next(t)
	for i := 1; i < 150; i++ {
		if f := c.next(t); f.text() != strconv.Itoa(i) {
			t.Fatalf("replay %d: %q", i, f.text())
		}
	}
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
			t.Fatalf("message %s delivered twice", f.text())
		}
		seen[f.ID] = true
		if n, _ := strconv.Atoi(f.text()); n == next {
			next++
		} else if n < next {
			t.Fatalf("out of order: %d after %d", n, next-1)
		}
	}
	_ = b.Publish(ctx, "chat:u", msg("live"))
	for {
		f := c.next(t)
		if f.Type == "message" {
			if f.text() != "live" || seen[f.ID] {
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
		f, err := c.nextErr(20 * time.Second)
		if err != nil {
			t.Fatalf("at %d: %v", expect, err)
		}
		switch f.Type {
		case "truncated":
			truncated = true
		case "message":
			n, _ := strconv.Atoi(f.text())
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
		if f.Type == "message" && strings.HasPrefix(f.text(), "live") {
			n++
		}
		return n == 10
	})
}
