package client

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// pending is a request waiting for the answer that carries its ref.
type pending struct{ ch chan result }

type result struct {
	f   *frame
	err error
}

// answer hands f to the request whose ref it carries, if one waits.
func (c *Client) answer(f *frame) bool {
	if len(f.Ref) == 0 {
		return false
	}
	c.mu.Lock()
	p := c.pending[string(f.Ref)]
	delete(c.pending, string(f.Ref))
	c.mu.Unlock()
	if p == nil {
		return false
	}
	if f.Type == "error" {
		p.ch <- result{err: f.err()}
	} else {
		p.ch <- result{f: f}
	}
	return true
}

// failPending fails every waiting request; c.mu is held.
func (c *Client) failPending(err error) {
	for ref, p := range c.pending {
		p.ch <- result{err: err}
		delete(c.pending, ref)
	}
}

// waitOpen returns the open connection, waiting for one while the client
// reconnects.
func (c *Client) waitOpen(ctx context.Context) (transport, error) {
	for {
		c.mu.Lock()
		tr, open, err := c.tr, c.open, c.err
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if tr != nil {
			return tr, nil
		}
		select {
		case <-open:
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// maxLost is how many connections a retried request may lose before it
// fails with ErrConnectionLost.
const maxLost = 3

// request sends f with a new ref and waits for its answer. retry: f is safe
// to send again (a read, or a publish with a key), so a connection lost
// before the answer is not the caller's problem.
func (c *Client) request(ctx context.Context, f out, retry bool) (*frame, error) {
	for lost := 0; ; lost++ {
		if lost == maxLost { // not the network's luck: something refuses it
			return nil, ErrConnectionLost
		}
		tr, err := c.waitOpen(ctx)
		if err != nil {
			return nil, err
		}
		p := &pending{ch: make(chan result, 1)}
		c.mu.Lock()
		if c.tr != tr { // dropped meanwhile: not sent
			c.mu.Unlock()
			lost--
			continue
		}
		c.ref++
		f.Ref = c.ref
		ref := strconv.FormatInt(f.Ref, 10)
		c.pending[ref] = p
		c.mu.Unlock()
		if err := c.write(ctx, tr, f); err != nil {
			c.mu.Lock()
			delete(c.pending, ref)
			c.mu.Unlock()
			var e *Error
			if errors.As(err, &e) || ctx.Err() != nil {
				return nil, cmpErr(ctx.Err(), err)
			}
			if !retry {
				return nil, ErrConnectionLost
			}
			c.awaitDrop(ctx, tr)
			continue
		}
		select {
		case r := <-p.ch:
			if r.err == errDropped {
				if !retry {
					return nil, ErrConnectionLost
				}
				continue
			}
			return r.f, r.err
		case <-ctx.Done():
			c.mu.Lock()
			delete(c.pending, ref)
			c.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// awaitDrop waits until tr, whose write failed, is replaced.
func (c *Client) awaitDrop(ctx context.Context, tr transport) {
	for {
		c.mu.Lock()
		cur, err := c.tr, c.err
		c.mu.Unlock()
		if cur != tr || err != nil || ctx.Err() != nil {
			return
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// newKey is a random idempotency key.
func newKey() string { return rand.Text()[:16] }

// Publish sends data (any JSON-marshalable value; json.RawMessage and
// []byte are sent as is) to room and returns the message's id once the
// server accepted it (in a room with history: stored). It carries a random
// idempotency key: in a room with history, a publish whose answer was lost
// (a reconnect, "outcome_unknown") is sent again and stored once. In a room
// without history the server keeps no keys: a publish resent after a lost
// connection may be delivered twice. A refusal is an *Error whose Key can
// be given to PublishOnce.
//
// Like every request, it waits for a connection while the client
// reconnects: bound it with ctx.
func (c *Client) Publish(ctx context.Context, room string, data any) (string, error) {
	return c.PublishOnce(ctx, room, newKey(), data)
}

// publishRetryFor is how long a publish is retried with its key: inside the
// server's two-minute window of de-duplication.
const publishRetryFor = 90 * time.Second

// PublishOnce is Publish with the caller's idempotency key (1–64 printable
// characters): in a room with history, the same key from the same user
// within two minutes is stored once and answered with the first id. It is
// retried with backoff for at most 90 s; after that the outcome is unknown
// (ErrOutcomeUnknown, with the key, to try again later).
func (c *Client) PublishOnce(ctx context.Context, room, key string, data any) (string, error) {
	if key == "" {
		return "", &Error{Code: "bad_request", Message: "an empty idempotency key", Room: room}
	}
	d, err := encodeData(data)
	if err != nil {
		return "", err
	}
	rctx, cancel := context.WithTimeout(ctx, publishRetryFor)
	defer cancel()
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		f, err := c.request(rctx, out{Type: "publish", Room: room, Data: d, Key: key}, true)
		if err == nil {
			return f.ID, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if rctx.Err() != nil || errors.Is(err, ErrOutcomeUnknown) && !sleep(rctx, delay) {
			return "", &Error{Code: "outcome_unknown", Message: "no answer in 90 s: the message may or may not be stored", Room: room, Key: key}
		}
		if !errors.Is(err, ErrOutcomeUnknown) {
			if e, ok := err.(*Error); ok {
				e.Key = key
			}
			return "", err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// History returns room's last limit stored messages (at most 100; 0: the
// server's default, 50), oldest first.
func (c *Client) History(ctx context.Context, room string, limit int) ([]Message, error) {
	f, err := c.request(ctx, out{Type: "history", Room: room, Limit: limit}, true)
	if err != nil {
		return nil, err
	}
	msgs := make([]Message, 0, len(f.Messages))
	for _, m := range f.Messages {
		msgs = append(msgs, Message{ID: m.ID, Room: room, From: m.From, Data: m.Data, Time: m.Time})
	}
	return msgs, nil
}

// PresenceQuery pages through a room's members, ordered by user id.
type PresenceQuery struct {
	After string // the previous page's Next
	Limit int    // 0: the server's default (100); at most 1000
}

// Presence returns who is in room, on every instance: counts, and one page
// of members.
func (c *Client) Presence(ctx context.Context, room string, q PresenceQuery) (*Presence, error) {
	f, err := c.request(ctx, out{Type: "presence", Room: room, After: q.After, Limit: q.Limit}, true)
	if err != nil {
		return nil, err
	}
	return f.presence(), nil
}

// Call asks the server's handler of method (pubsub.WithCall) and returns
// its reply. ctx's deadline, if any, is the call's timeout (the server caps
// it at its own, 10 s by default). A call is not repeated after a lost
// connection: that is ErrConnectionLost.
func (c *Client) Call(ctx context.Context, method string, data any) (json.RawMessage, error) {
	d, err := encodeData(data)
	if err != nil {
		return nil, err
	}
	f := out{Type: "call", Method: method, Data: d}
	if dl, ok := ctx.Deadline(); ok {
		f.Timeout = max(1, time.Until(dl).Milliseconds())
	}
	r, err := c.request(ctx, f, false)
	if err != nil {
		return nil, err
	}
	return r.Data, nil
}

// Send delivers data to the server application that accepted the
// connection (Conn.Messages in Go); the plain handler refuses it.
func (c *Client) Send(ctx context.Context, data any) error {
	d, err := encodeData(data)
	if err != nil {
		return err
	}
	tr, err := c.waitOpen(ctx)
	if err != nil {
		return err
	}
	err = c.write(ctx, tr, out{Type: "send", Data: d})
	var refused *Error
	switch {
	case err == nil, errors.As(err, &refused):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return ErrConnectionLost
}

// Ack marks the user's inbox read up to and including id, for every
// connection of the user (Inbox does it by itself).
func (c *Client) Ack(ctx context.Context, id string) error {
	_, err := c.request(ctx, out{Type: "ack", ID: id}, true)
	return err
}

// Ping checks the connection end to end (a "pong" answers).
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.request(ctx, out{Type: "ping"}, false)
	return err
}
