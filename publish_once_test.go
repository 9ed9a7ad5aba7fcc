package pubsub_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// PublishOnce: the same key in the same room is stored once, and answered with the
// first id; another key, another room or (for clients) another user is a
// message of its own.
func TestPublishOnceStoresOnce(t *testing.T) {
	b := resumeBroker(t, WithClientPublish(func(context.Context, string, string) error { return nil }))
	srv := serve(t, b, nil)
	sub := dialWS(t, srv, dialOpts{user: "sub", rooms: []string{"chat:k", "chat:other"}})
	first, err := b.PublishOnce(ctx, "chat:k", "req-1", msg("a"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.PublishOnce(ctx, "chat:k", "req-1", msg("a (retry)"))
	if err != nil || again.ID != first.ID {
		t.Fatalf("retry: %+v %v, want the first id %s", again, err, first.ID)
	}
	if _, err := b.PublishOnce(ctx, "chat:k", "req-2", msg("b")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PublishOnce(ctx, "chat:other", "req-1", msg("c")); err != nil {
		t.Fatal(err)
	}
	// Clients: the key is scoped by user.
	alice := dialWS(t, srv, dialOpts{user: "alice"})
	bob := dialWS(t, srv, dialOpts{user: "bob"})
	var ids []string
	for _, c := range []*wsClient{alice, alice, bob} {
		f := c.request(t, map[string]any{"type": "publish", "room": "chat:k", "data": map[string]string{"text": "from " + c.Welcome.User}, "key": "tab-7", "ref": 1})
		if f.Type != "published" {
			t.Fatalf("publish answered %+v", f)
		}
		ids = append(ids, f.ID)
	}
	if ids[0] != ids[1] || ids[0] == ids[2] {
		t.Fatalf("ids %v: alice's retry must get her first id, bob's message its own", ids)
	}
	expectOnly(t, b, sub, "message:chat:k:a", "message:chat:k:b", "message:chat:other:c", "message:chat:k:from alice", "message:chat:k:from bob")

	if _, err := b.PublishOnce(ctx, "chat:k", "has space", msg("x")); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("a key with a space: %v, want ErrInvalidKey", err)
	}
	if f := alice.request(t, map[string]any{"type": "publish", "room": "chat:k", "data": 1, "key": "", "ref": 2}); f.Type != "published" {
		t.Fatalf("an empty key is no key: %+v", f)
	}
	if f := alice.request(t, map[string]any{"type": "publish", "room": "chat:k", "data": 1, "key": "tab\n7", "ref": 3}); f.ErrorCode() != "bad_request" {
		t.Fatalf("a key with a newline: %+v", f)
	}
}

// The store's acknowledgement is lost (the network holds it back) after
// the message was stored: the caller gets ErrOutcomeUnknown, not a
// failure; publishing again with the same key stores nothing more and
// returns the first id; the subscriber gets the message once.
func TestLostAcknowledgementRetriedWithKeyStoresOnce(t *testing.T) {
	ns := testkit.StartNATS(t, true)
	u, _ := url.Parse(ns.ClientURL())
	proxy := testkit.NewProxy(t, u.Host)
	b := newBroker(t, WithNATSURL("nats://"+proxy.Addr()), WithHistory("chat:*", History{Messages: 100}))
	srv := serve(t, b, nil)
	sub := dialWS(t, srv, dialOpts{user: "sub", rooms: []string{"chat:lost"}})

	js, err := jetstream.New(testkit.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	stored := func() uint64 {
		s, err := js.Stream(ctx, "ROOMCAST_HISTORY")
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	proxy.Hold()
	short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	_, err = b.PublishOnce(short, "chat:lost", "order-42", msg("order"))
	cancel()
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("publish with its ack held back: %v, want ErrOutcomeUnknown", err)
	}
	testkit.Eventually(t, "the message stored", func() bool { return stored() == 1 })
	proxy.Release()

	ack, err := b.PublishOnce(ctx, "chat:lost", "order-42", msg("order"))
	if err != nil || ack.ID != "1" {
		t.Fatalf("retry: %+v %v, want the first message's id 1", ack, err)
	}
	if n := stored(); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	expectOnly(t, b, sub, "message:chat:lost:order")
}
