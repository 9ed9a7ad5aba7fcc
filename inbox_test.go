package pubsub_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// inboxOf reads want inbox frames from c (the inbox is read beside the
// connection's start), then a marker, and returns every inbox text and id
// before it (and whether the inbox said it was full): what is not there
// was not delivered.
func inboxOf(t *testing.T, b *Broker, c client, want int) (texts, ids []string, truncated bool) {
	t.Helper()
	seen := 0
	for seen < want {
		switch f := testkit.Next(t, c); f.Type {
		case "inbox":
			texts, ids = append(texts, f.Text()), append(ids, f.ID)
			seen++
		case "inbox_truncated":
			truncated = true
		}
	}
	sendMarker(t, b, c, "end")
	for _, f := range collect(t, c, "end") {
		switch f.Type {
		case "inbox":
			texts, ids = append(texts, f.Text()), append(ids, f.ID)
		case "inbox_truncated":
			truncated = true
		}
	}
	return texts, ids, truncated
}

// Messages sent while a user is away arrive on the next connection, in
// order, and again on the one after until acknowledged; an acknowledgement
// is read for every connection of the user.
func TestInboxSurvivesBeingOffline(t *testing.T) {
	b := newBroker(t, WithInbox(History{Messages: 10}))
	srv := serve(t, b, nil)
	for _, text := range []string{"one", "two", "three"} {
		if _, err := b.SendToInbox(ctx, "alice", msg(text)); err != nil {
			t.Fatal(err)
		}
	}
	// A tab that dies before acknowledging gets them again.
	tab := dialWS(t, srv, dialOpts{user: "alice"})
	texts, ids, _ := inboxOf(t, b, tab, 3)
	if strings.Join(texts, ",") != "one,two,three" {
		t.Fatalf("first connection got %v", texts)
	}
	tab.Cut()
	sse := dialSSE(t, srv, dialOpts{user: "alice"})
	if again, _, _ := inboxOf(t, b, sse, 3); strings.Join(again, ",") != "one,two,three" {
		t.Fatalf("after a tab died unacknowledged: %v", again)
	}
	// Acknowledged up to "two" (over SSE: a POST), by this tab: read for all.
	if resp := postFrame(t, srv.URL+"/live", "alice", map[string]any{"type": "ack", "id": ids[1], "ref": 1, "conn": sse.ConnID()}); resp.StatusCode != 202 {
		t.Fatalf("ack: %s", resp.Status)
	}
	if f := nextOf(t, sse, "acked"); f.ID != ids[1] {
		t.Fatalf("got %+v", f)
	}
	unread, err := b.Inbox(ctx, "alice")
	if err != nil || len(unread) != 1 || unread[0].ID != ids[2] {
		t.Fatalf("Inbox = %+v, %v", unread, err)
	}
	next := dialWS(t, srv, dialOpts{user: "alice"})
	if texts, _, _ := inboxOf(t, b, next, 1); strings.Join(texts, ",") != "three" {
		t.Fatalf("after the acknowledgement: %v", texts)
	}
	// Live: every open connection of the user gets a new one once; others nothing.
	bob := dialWS(t, srv, dialOpts{user: "bob"})
	if _, err := b.SendToInbox(ctx, "alice", msg("live")); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]client{"the SSE tab": sse, "the WebSocket tab": next} {
		eventually(t, "the live inbox message", func() bool { return len(mustInbox(t, b, "alice")) == 2 })
		f := nextOf(t, c, "inbox")
		for f.Text() != "live" {
			f = nextOf(t, c, "inbox")
		}
		if texts, _, _ := inboxOf(t, b, c, 0); len(texts) != 0 {
			t.Errorf("%s got more: %v", name, texts)
		}
	}
	if texts, _, _ := inboxOf(t, b, bob, 0); len(texts) != 0 {
		t.Errorf("bob got alice's inbox: %v", texts)
	}
	if err := b.ClearInbox(ctx, "alice", ""); err != nil {
		t.Fatal(err)
	}
	if unread := mustInbox(t, b, "alice"); len(unread) != 0 {
		t.Fatalf("after ClearInbox: %+v", unread)
	}
}

func mustInbox(t *testing.T, b *Broker, user string) []InboxMessage {
	t.Helper()
	m, err := b.Inbox(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// An inbox over its limit keeps the newest and says it is full.
func TestInboxOverLimitDropsOldest(t *testing.T) {
	b := newBroker(t, WithInbox(History{Messages: 3}))
	srv := serve(t, b, nil)
	for i := range 5 {
		if _, err := b.SendToInbox(ctx, "carol", msg(string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	c := dialWS(t, srv, dialOpts{user: "carol"})
	texts, _, truncated := inboxOf(t, b, c, 3)
	if strings.Join(texts, ",") != "c,d,e" || !truncated {
		t.Fatalf("got %v, truncated %v", texts, truncated)
	}
}

// Without WithInbox, or for an anonymous connection, clear errors.
func TestInboxRefusals(t *testing.T) {
	b := newBroker(t)
	if _, err := b.SendToInbox(ctx, "u", msg("x")); !errors.Is(err, ErrNoInbox) {
		t.Errorf("SendToInbox without an inbox: %v", err)
	}
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	c.send(t, map[string]any{"type": "ack", "id": "1", "ref": 1})
	if f := testkit.Next(t, c); f.ErrorCode() != "no_inbox" {
		t.Errorf("ack without inboxes: %+v", f)
	}
	bi := newBroker(t, WithInbox(History{Messages: 3}))
	if _, err := bi.SendToInbox(ctx, "", msg("x")); !errors.Is(err, ErrInvalidUser) {
		t.Errorf("no user: %v", err)
	}
	if _, err := bi.SendToInbox(ctx, "u", []byte("{bad")); !errors.Is(err, ErrInvalidData) {
		t.Errorf("bad data: %v", err)
	}
	si := serve(t, bi, nil)
	anon := dialWS(t, si, dialOpts{})
	anon.send(t, map[string]any{"type": "ack", "id": "1", "ref": 1})
	if f := testkit.Next(t, anon); f.ErrorCode() != "forbidden" {
		t.Errorf("anonymous ack: %+v", f)
	}
	user := dialWS(t, si, dialOpts{user: "u"})
	user.send(t, map[string]any{"type": "ack", "id": "x", "ref": 1})
	if f := testkit.Next(t, user); f.ErrorCode() != "invalid_id" {
		t.Errorf("bad id: %+v", f)
	}
}

// On a three-node cluster (inbox replicated on every node): messages sent
// from node 0 while the user is away arrive on node 2, exactly once and in
// order; a tab there that dies before acknowledging gets them again on
// node 1; once acknowledged, no node delivers them again.
func TestInboxAcrossACluster(t *testing.T) {
	bs := newJetStreamCluster(t, 3, WithInbox(History{Messages: 100}))
	s1, s2 := serve(t, bs[1], nil), serve(t, bs[2], nil)
	var want []string
	for i := range 20 {
		text := "dm " + string(rune('a'+i))
		want = append(want, text)
		if _, err := bs[0].SendToInbox(ctx, "dana", msg(text)); err != nil {
			t.Fatal(err)
		}
	}
	c := dialWS(t, s2, dialOpts{user: "dana"})
	texts, ids, _ := inboxOf(t, bs[2], c, 20)
	if strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Fatalf("node 2 delivered %v", texts)
	}
	c.Cut() // died before acknowledging
	c = dialWS(t, s1, dialOpts{user: "dana"})
	if again, _, _ := inboxOf(t, bs[1], c, 20); strings.Join(again, "|") != strings.Join(want, "|") {
		t.Fatalf("node 1, after an unacknowledged tab: %v", again)
	}
	c.send(t, map[string]any{"type": "ack", "id": ids[len(ids)-1], "ref": 1})
	nextOf(t, c, "acked")
	// A live one, sent from node 0, reaches the open tab on node 1 once.
	if _, err := bs[0].SendToInbox(ctx, "dana", msg("live")); err != nil {
		t.Fatal(err)
	}
	if live, _, _ := inboxOf(t, bs[1], c, 1); strings.Join(live, "|") != "live" {
		t.Fatalf("live: %v", live)
	}
	c.Cut()
	last := dialWS(t, s2, dialOpts{user: "dana"})
	if rest, _, _ := inboxOf(t, bs[2], last, 1); strings.Join(rest, "|") != "live" {
		t.Fatalf("after the acknowledgement, node 2 delivered %v", rest)
	}
}

// An acknowledgement naming a position far past the end (a hostile or
// confused client) reads the whole inbox, at once.
func TestInboxHugeAckIsBounded(t *testing.T) {
	b := newBroker(t, WithInbox(History{Messages: 10}))
	srv := serve(t, b, nil)
	_, _ = b.SendToInbox(ctx, "eve", msg("x"))
	c := dialWS(t, srv, dialOpts{user: "eve"})
	inboxOf(t, b, c, 1)
	c.send(t, map[string]any{"type": "ack", "id": "18446744073709551615", "ref": 1})
	if f := nextOf(t, c, "acked"); f.ID == "" {
		t.Fatal(f)
	}
	if unread := mustInbox(t, b, "eve"); len(unread) != 0 {
		t.Fatalf("unread %+v", unread)
	}
}

// Acknowledging while new messages are stored loses none of them: every
// message reaches the reading connection once, in order, and a connection
// opened afterwards finds the inbox empty.
func TestInboxAckRacingSends(t *testing.T) {
	b := newBroker(t, WithInbox(History{Messages: 1000}))
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "frank"})
	const n = 200
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := b.SendToInbox(ctx, "frank", msg(strconv.Itoa(i))); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := 0; i < n; {
		f := testkit.Next(t, c)
		if f.Type != "inbox" {
			continue
		}
		if f.Text() != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, f.Text())
		}
		i++
		c.send(t, map[string]any{"type": "ack", "id": f.ID}) // at once, while more are stored
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	eventually(t, "everything read", func() bool { return len(mustInbox(t, b, "frank")) == 0 })
	if texts, _, _ := inboxOf(t, b, dialWS(t, srv, dialOpts{user: "frank"}), 0); len(texts) != 0 {
		t.Fatalf("a new connection got %v", texts)
	}
}
