package pubsub_test

import (
	"slices"
	"testing"

	. "github.com/roomcast/pubsub"
)

// The store can be ahead of the live stream: a resume replays messages
// whose live copies reach this instance only after the room went live
// (here: they were missed and the fan-out repairs them from history when
// the next one shows the gap). The resumed connection gets each once; a
// connection that was live all along gets each once too.
func TestResumeNeverRedeliversWhatItReplayed(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	live := dialWS(t, srv, dialOpts{user: "live", rooms: []string{"chat:once"}})
	first, err := b.PublishAck(ctx, "chat:once", msg("m0"))
	if err != nil {
		t.Fatal(err)
	}
	if f := live.next(t); f.Text() != "m0" {
		t.Fatalf("live got %+v", f)
	}
	var resumed *wsClient
	err = MissLive(b, "chat:once", func() {
		publishNumberedAs(t, b, "chat:once", "m1", "m2", "m3")
		resumed = dialWS(t, srv, dialOpts{user: "resumed"})
		if f := resumed.request(t, map[string]any{"type": "subscribe", "room": "chat:once", "last_id": first.ID}); f.Type != "subscribed" {
			t.Errorf("resume answered %+v", f)
		}
		for _, want := range []string{"m1", "m2", "m3"} {
			if f := resumed.next(t); f.Text() != want {
				t.Errorf("replay: got %+v, want %s", f, want)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// m4 names m3 as its room's previous message: this instance repairs
	// m1..m3 from the store for its live members.
	publishNumberedAs(t, b, "chat:once", "m4")
	// m4 comes through the repair, which may be overtaken by a marker on
	// another path: wait for it, then check nothing else came.
	if f := resumed.next(t); f.Text() != "m4" {
		t.Fatalf("after the replay the resumed connection got %+v, want m4 only", f)
	}
	expectOnly(t, b, resumed)
	var got []string
	for len(got) == 0 || got[len(got)-1] != "m4" {
		got = append(got, live.next(t).Text())
	}
	if !slices.Equal(got, []string{"m1", "m2", "m3", "m4"}) {
		t.Fatalf("the live connection got %v, want m1..m4 once each", got)
	}
	expectOnly(t, b, live)
}

func publishNumberedAs(t *testing.T, b *Broker, room string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if err := b.Publish(ctx, room, msg(s)); err != nil {
			t.Fatal(err)
		}
	}
}

// A resume from a position past the store's end (the store was reset: an
// in-memory store after a restart) is told "truncated" and then gets the
// new messages, whose positions are lower than its old one.
func TestResumePastTheStoreEndGetsNewMessages(t *testing.T) {
	b := resumeBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "chat:reset", "last_id": "999"}); f.Type != "subscribed" {
		t.Fatalf("resume answered %+v", f)
	}
	if f := c.next(t); f.Type != "truncated" {
		t.Fatalf("got %+v, want truncated", f)
	}
	publishNumberedAs(t, b, "chat:reset", "new")
	if f := c.next(t); f.Type != "message" || f.Text() != "new" {
		t.Fatalf("after the reset got %+v, want the new message", f)
	}
}
