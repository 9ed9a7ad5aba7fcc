package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roomcast/pubsub"
)

// newBroker is the chat's broker: rooms keep their last 200 messages (a
// page that reconnects misses nothing, and a message has a stored id),
// direct messages wait in the recipient's inbox until one of their pages
// has shown them (for a week at most), and pages send with
// live.call("send", …), answered by sendCall.
func newBroker(opts ...pubsub.Option) (*pubsub.Broker, error) {
	var ps *pubsub.Broker
	send := func(ctx context.Context, c pubsub.Call) ([]byte, error) { return sendCall(ctx, ps, c) }
	ps, err := pubsub.New(append([]pubsub.Option{
		pubsub.WithHistory("*", pubsub.History{Messages: 200}),
		pubsub.WithInbox(pubsub.History{Messages: 100, MaxAge: 7 * 24 * time.Hour}),
		pubsub.WithCall("send", send),
	}, opts...)...)
	return ps, err
}

// sendCall validates a message on the server and sends it: to a room
// ({"room","text"}: answered with the stored message's id) or to a user
// ({"to","text"}). A refusal is a CallError the page shows as is.
func sendCall(ctx context.Context, ps *pubsub.Broker, c pubsub.Call) ([]byte, error) {
	var req struct{ Room, To, Text string }
	if err := json.Unmarshal(c.Data, &req); err != nil {
		return nil, &pubsub.CallError{Code: "invalid", Message: `send {"room" or "to", "text"}`}
	}
	req.Text = strings.TrimSpace(req.Text)
	if req.Text == "" || utf8.RuneCountInString(req.Text) > 2000 {
		return nil, &pubsub.CallError{Code: "invalid", Message: "text must be 1 to 2000 characters"}
	}
	from := c.Conn.User()
	msg, _ := json.Marshal(chatMessage{From: from, To: req.To, Text: req.Text, At: time.Now().UTC()})
	if req.To != "" {
		if _, err := ps.SendToInbox(ctx, req.To, msg); err != nil { // delivered now, or when they log in
			return nil, callError(err)
		}
		if req.To != from {
			_ = ps.SendToUser(ctx, from, msg) // the sender's other tabs
		}
		return []byte(`{"sent":true}`), nil
	}
	ack, err := ps.PublishAck(ctx, req.Room, msg)
	if err != nil {
		return nil, callError(err)
	}
	return json.Marshal(map[string]string{"id": ack.ID})
}

func callError(err error) error {
	switch {
	case errors.Is(err, pubsub.ErrInvalidRoom):
		return &pubsub.CallError{Code: "invalid_room", Message: "rooms are 1 to 128 characters without spaces, '.', '*' or '>'"}
	case errors.Is(err, pubsub.ErrInvalidUser):
		return &pubsub.CallError{Code: "invalid_user", Message: "no such user name"}
	}
	return err // "internal" to the page, logged here
}
