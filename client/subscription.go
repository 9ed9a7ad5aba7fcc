package client

import (
	"context"
	"errors"
	"iter"
	"slices"
)

// Subscription is one reader of a room. Several may read the same room;
// the connection subscribes once.
type Subscription struct {
	c        *Client
	room     string
	messages *queue[Message]
	presence *queue[PresenceEvent] // nil unless WithPresence
	lastID   string                // the last message's id; under c.mu
}

// SubscribeOption changes a subscription.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct {
	presence bool
	lastID   string
}

// WithPresence asks for the room's presence: a snapshot, then join and
// leave events, read with Subscription.Presence.
func WithPresence() SubscribeOption { return func(o *subscribeOptions) { o.presence = true } }

// WithLastID resumes the room after the message id the caller kept (from
// Subscription.LastID in an earlier run): in a room with history, every
// stored message after it comes first, then live ones; an id the server
// cannot use fails Subscribe with ErrInvalidID. Without it a subscription
// starts with live messages.
func WithLastID(id string) SubscribeOption { return func(o *subscribeOptions) { o.lastID = id } }

// Subscribe subscribes the connection to room and returns once the server
// confirmed it: messages published after that reach the subscription. A
// refusal is an *Error (ErrForbidden, ErrInvalidRoom, ErrTooManyRooms,
// ErrInvalidID). The subscription lasts across reconnects, resumed from its
// last id, until Unsubscribe.
func (c *Client) Subscribe(ctx context.Context, name string, opts ...SubscribeOption) (*Subscription, error) {
	var o subscribeOptions
	for _, opt := range opts {
		opt(&o)
	}
	s := &Subscription{c: c, room: name, messages: newQueue(c.o.Buffer, messageSize)}
	if o.presence {
		s.presence = newQueue(c.o.Buffer, presenceSize)
	}
	wait := make(chan error, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	r := c.rooms[name]
	fresh := r == nil
	if fresh {
		r = &room{lastID: o.lastID}
		if o.lastID != "" {
			r.behind, r.catchUp = true, c.lastID
		}
		c.rooms[name] = r
	}
	s.lastID = r.lastID
	// A new slice: the reader ranges over the old one outside the lock.
	r.subs = append(slices.Clip(r.subs), s)
	// A room already subscribed needs no frame, unless presence is new.
	send := fresh || (o.presence && !r.presence)
	r.presence = r.presence || o.presence
	wants := send || !r.ok // not confirmed yet: wait with the first caller
	if wants {
		r.waiters = append(r.waiters, wait)
	}
	f := out{Type: "subscribe", Room: name, LastID: r.lastID, Presence: r.presence}
	tr, anonymousSSE := c.tr, c.roomsInURL()
	if send && anonymousSSE {
		c.rebuild = true // its rooms are in the stream's URL
	}
	c.mu.Unlock()
	if !wants {
		return s, nil
	}
	switch {
	case !send: // another Subscribe's frame is on its way; its answer is ours
	case anonymousSSE:
		tr.close(false) // the reader sees the end and connects with the new URL at once
	case tr != nil:
		// The answer to this frame, or to the resubscription of the next
		// connection, releases wait.
		if err := c.write(ctx, tr, f); err != nil && ctx.Err() == nil {
			if _, refused := err.(*Error); refused {
				c.dropRoom(name, err)
				return nil, err
			}
		}
	}
	select {
	case err := <-wait:
		if err != nil {
			return nil, err
		}
		return s, nil
	case <-ctx.Done():
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
		defer cancel()
		_ = s.Unsubscribe(uctx)
		return nil, ctx.Err()
	}
}

var errNoPresence = errors.New("roomcast: subscribed without WithPresence")

// Room is the subscription's room.
func (s *Subscription) Room() string { return s.room }

// LastID is the id of the last message the subscription received (also
// after it ended): keep it to resume with WithLastID in a later run.
func (s *Subscription) LastID() string {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.lastID
}

// Messages yields the room's messages in order, each id once. Errors come
// in their place in the stream: ErrTruncated (messages may be missing
// there), a *DroppedError (the caller read too slowly), another *Error
// about the room (ErrStoreFailed) are news, and the iteration goes on. It
// ends after its final error: one that errors.Is ErrUnsubscribed
// (Unsubscribe, server code took the connection out, or the server refused
// the room: then it wraps the *Error), ErrClosed, a *CloseError, or ctx's
// error. One iteration at a time.
func (s *Subscription) Messages(ctx context.Context) iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) { s.messages.seq(ctx, yield, nil) }
}

// Presence yields the room's presence events, for a subscription made
// WithPresence: first a snapshot, then join and leave. It ends like
// Messages; without WithPresence it ends at once.
func (s *Subscription) Presence(ctx context.Context) iter.Seq2[PresenceEvent, error] {
	return func(yield func(PresenceEvent, error) bool) {
		if s.presence == nil {
			yield(PresenceEvent{}, errNoPresence)
			return
		}
		s.presence.seq(ctx, yield, nil)
	}
}

// Unsubscribe ends this subscription (its iterators end with
// ErrUnsubscribed); the connection leaves the room with its last reader.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	s.end(ErrUnsubscribed)
	c.mu.Lock()
	r := c.rooms[s.room]
	if r == nil {
		c.mu.Unlock()
		return nil
	}
	r.subs = slices.DeleteFunc(slices.Clone(r.subs), func(x *Subscription) bool { return x == s })
	if len(r.subs) > 0 {
		c.mu.Unlock()
		return nil
	}
	delete(c.rooms, s.room)
	tr, anonymousSSE := c.tr, c.roomsInURL()
	if anonymousSSE {
		c.rebuild = true
	}
	c.mu.Unlock()
	switch {
	case tr == nil:
		return nil // the next connection leaves it out
	case anonymousSSE:
		tr.close(false)
		return nil
	}
	_, err := c.request(ctx, out{Type: "unsubscribe", Room: s.room}, false)
	if err == ErrConnectionLost {
		return nil
	}
	return err
}

func (s *Subscription) end(err error) {
	s.messages.end(err)
	if s.presence != nil {
		s.presence.end(err)
	}
}

// Messages yields what no Subscription takes: direct messages (to this user
// on every connection, or to this connection), and messages of rooms the
// server subscribed the connection to. Messages received while nobody
// iterates wait in a buffer of Options.Buffer.
func (c *Client) Messages(ctx context.Context) iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) { c.direct.seq(ctx, yield, nil) }
}

// Inbox yields the messages of the user's inbox (PROTOCOL.md §12): those
// kept while the user was away, then new ones. Each message is
// acknowledged, for all the user's connections, when the loop body for it
// returns (not when it breaks). ErrInboxTruncated is news, not an end.
func (c *Client) Inbox(ctx context.Context) iter.Seq2[InboxMessage, error] {
	return func(yield func(InboxMessage, error) bool) {
		c.inbox.seq(ctx, yield, c.ackLater)
	}
}

// ackLater acknowledges m in the background. Acknowledgements are
// cumulative: while one is on its way, only the newest id waits for the
// next.
func (c *Client) ackLater(m InboxMessage) {
	c.mu.Lock()
	c.ackNext = m.ID
	busy := c.acking
	c.acking = true
	c.mu.Unlock()
	if busy {
		return
	}
	c.background(func() {
		for {
			c.mu.Lock()
			id := c.ackNext
			c.ackNext = ""
			if id == "" {
				c.acking = false
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			if err := c.Ack(c.ctx, id); err != nil && c.ctx.Err() == nil {
				c.log.Warn("roomcast: an inbox acknowledgement failed; the message comes again on the next connection", "id", id, "err", err)
			}
		}
	})
}

// roomsInURL reports whether the connection is an anonymous SSE stream: it
// cannot POST, so its rooms change only with a new stream whose URL names
// them. c.mu is held.
func (c *Client) roomsInURL() bool { return c.tr != nil && c.tr.name() == "sse" && c.user == "" }
