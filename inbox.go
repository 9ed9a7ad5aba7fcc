package pubsub

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/inbox"
	"github.com/roomcast/pubsub/internal/protocol"
	"github.com/roomcast/pubsub/internal/wire"
)

// WithInbox gives every user an inbox: messages sent with SendToInbox are
// stored (in JetStream, on whatever NATS the broker uses, replicated like
// history: WithHistoryReplicas) until the user reads them, at most
// h.Messages per user (required; the oldest dropped) and for at most
// h.MaxAge (0: no limit).
//
// What "read" means: every open connection of the user gets each inbox
// message once, as an "inbox" frame, in order, live or when it connects
// (on any instance); the first connection that acknowledges it (the browser
// client does after its "inbox" listeners ran) removes it and every one
// before it, for all of the user's connections, so a connection opened
// later does not get it again. A tab closed before acknowledging gets it
// again on its next connection. Anonymous connections have no inbox.
func WithInbox(h History) Option {
	return func(c *config) { c.inbox = &h }
}

// InboxMessage is one unread message of a user's inbox.
type InboxMessage struct {
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
	Time time.Time       `json:"time"`
}

// ErrNoInbox: the broker was made without WithInbox.
var ErrNoInbox error = &codedError{"pubsub: the broker keeps no inboxes (WithInbox)", "no_inbox"}

// SendToInbox stores data, one JSON value, in user's inbox and delivers it
// to the user's open connections on every instance; a connection the user
// opens later gets it too, until one acknowledges it. It returns once the
// message is stored: the Ack's ID is its position. The library's own
// retries store it once.
func (b *Broker) SendToInbox(ctx context.Context, user string, data []byte) (Ack, error) {
	if b.inbox == nil {
		return Ack{}, ErrNoInbox
	}
	if err := validUser(user); err != nil {
		return Ack{}, err
	}
	data, err := b.checkData(data)
	if err != nil {
		return Ack{}, err
	}
	seq, err := b.inbox.Send(ctx, user, "i "+b.nextMessageID(), data)
	if err != nil {
		return Ack{}, fmt.Errorf("pubsub: storing in %q's inbox: %w", truncate(user), err)
	}
	return Ack{ID: strconv.FormatUint(seq, 10), Stored: true}, nil
}

// Inbox returns user's unread inbox messages, oldest first (for an
// "unread" badge, or a page that shows them).
func (b *Broker) Inbox(ctx context.Context, user string) ([]InboxMessage, error) {
	if b.inbox == nil {
		return nil, ErrNoInbox
	}
	if err := validUser(user); err != nil {
		return nil, err
	}
	msgs, err := b.inbox.Read(ctx, user, 0)
	out := make([]InboxMessage, len(msgs))
	for i, m := range msgs {
		out[i] = InboxMessage{ID: strconv.FormatUint(m.Seq, 10), Data: m.Data, Time: m.Time}
	}
	return out, err
}

// ClearInbox marks user's inbox read up to and including the message id
// upTo ("" : all of it), as a client's acknowledgement does.
func (b *Broker) ClearInbox(ctx context.Context, user, upTo string) error {
	if b.inbox == nil {
		return ErrNoInbox
	}
	if err := validUser(user); err != nil {
		return err
	}
	seq := uint64(1<<63 - 1)
	if upTo != "" {
		var err error
		if seq, err = parsePosition(upTo); err != nil {
			return err
		}
	}
	return b.inbox.Ack(ctx, user, seq)
}

// inboxes is this instance's connections that read an inbox, by user:
// where a stored message's cue goes.
type inboxes struct {
	mu     sync.Mutex
	byUser map[string]map[*inboxReader]struct{}
	cues   *nats.Subscription
}

// inboxReader delivers a user's inbox to one connection: each message
// once, in order (last is the highest position delivered; want the
// highest one a cue named, which a lagging replica may not show yet).
type inboxReader struct {
	c       *Conn
	mu      sync.Mutex
	last    uint64
	want    uint64
	reading bool
	again   bool
}

func (b *Broker) startInboxes() error {
	b.inboxes = &inboxes{byUser: map[string]map[*inboxReader]struct{}{}}
	var err error
	b.inboxes.cues, err = b.nc.Subscribe(b.subjects.InboxLiveWildcard(), func(m *nats.Msg) {
		if user, ok := b.subjects.InboxLiveUser(m.Subject); ok {
			b.inboxes.cue(user, inbox.Seq(m))
		}
	})
	return err
}

// cue has the user's readers ("" : everyone's, after cues may have been
// lost: a NATS reconnect) read what they have not delivered.
func (h *inboxes) cue(user string, seq uint64) {
	h.mu.Lock()
	var readers []*inboxReader
	if user != "" {
		for r := range h.byUser[user] {
			readers = append(readers, r)
		}
	} else {
		for _, rs := range h.byUser {
			for r := range rs {
				readers = append(readers, r)
			}
		}
	}
	h.mu.Unlock()
	for _, r := range readers {
		r.cue(seq)
	}
}

// openInbox starts delivering the connection's inbox, if it has one and
// is not closing already (then closeInbox has run, or will find it open).
func (c *Conn) openInbox() {
	r := c.inbox
	if r == nil {
		return
	}
	h := c.b.inboxes
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	h.mu.Lock()
	if h.byUser[c.user] == nil {
		h.byUser[c.user] = map[*inboxReader]struct{}{}
	}
	h.byUser[c.user][r] = struct{}{}
	h.mu.Unlock()
	c.mu.Unlock()
	r.cue(0)
}

// closeInbox stops delivering it.
func (c *Conn) closeInbox() {
	r := c.inbox
	if r == nil {
		return
	}
	h := c.b.inboxes
	h.mu.Lock()
	delete(h.byUser[c.user], r)
	if len(h.byUser[c.user]) == 0 {
		delete(h.byUser, c.user)
	}
	h.mu.Unlock()
}

// cue reads the inbox after the last position delivered, unless seq (a
// stored message's position, 0 if unknown) was delivered already. One read
// at a time; a cue during a read makes it read again.
func (r *inboxReader) cue(seq uint64) {
	r.mu.Lock()
	r.want = max(r.want, seq)
	if seq != 0 && seq <= r.last {
		r.mu.Unlock()
		return
	}
	if r.reading {
		r.again = true
		r.mu.Unlock()
		return
	}
	r.reading = true
	r.mu.Unlock()
	if !r.c.busy() {
		return
	}
	go func() {
		defer r.c.bg.Done()
		wait, tries := 50*time.Millisecond, 0
		for {
			err := r.read()
			r.mu.Lock()
			// Behind: a replica that has not caught up yet, or the message
			// was read and acknowledged by another tab meanwhile (then
			// it never comes: give up after ~3 s of tries).
			behind := r.last < r.want
			if behind && err == nil {
				if tries++; tries > 6 {
					r.want, behind = r.last, false
				}
			}
			if r.c.out.Closing() || (!r.again && !behind && err == nil) {
				r.reading = false
				r.mu.Unlock()
				return
			}
			r.again = false
			r.mu.Unlock()
			if err != nil || behind {
				select { // back off, up to 30 s, until the store answers
				case <-time.After(wait):
				case <-r.c.calls.ctx.Done():
				}
				wait = min(2*wait, 30*time.Second)
			} else {
				wait, tries = 50*time.Millisecond, 0
			}
		}
	}()
}

// read queues what the inbox holds after the last position delivered,
// keeping the connection's queue at most half full (a full inbox must not
// make its reader a slow consumer).
func (r *inboxReader) read() error {
	c := r.c
	ctx, cancel := context.WithTimeout(c.calls.ctx, requestTimeout)
	defer cancel()
	r.mu.Lock()
	after := r.last
	r.mu.Unlock()
	msgs, err := c.b.inbox.Read(ctx, c.user, after)
	if err != nil && ctx.Err() == nil {
		if ok, suppressed := c.b.logNoisy.Allow("inbox-read"); ok {
			c.b.log.Warn("pubsub: reading an inbox failed; retrying", "user", c.user, "conn", c.id, "err", err, "suppressed", suppressed)
		}
	}
	if limit := c.b.inbox.Limit(); after == 0 && limit > 0 && len(msgs) >= limit {
		c.reply(wire.Reply("inbox_truncated", "", "", nil)) // full: older ones may have been dropped
	}
	for _, m := range msgs {
		for {
			frames, bytes := c.out.Len()
			if c.out.Closing() || (frames < c.b.cfg.queueMessages/2 && bytes < c.b.cfg.queueBytes/2) {
				break
			}
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// Recorded before it is queued: a client may acknowledge it as
		// soon as it arrives, and Ack counts only what was given.
		r.mu.Lock()
		r.last = m.Seq
		r.mu.Unlock()
		c.reply(wire.InboxFrame(strconv.FormatUint(m.Seq, 10), m.Data, m.Time))
	}
	return err
}

// Ack is a client's acknowledgement of its inbox up to id.
func (s session) Ack(id string) error {
	c := s.c
	if c.b.inbox == nil {
		return &protocol.Refusal{Code: protocol.NoInbox, Message: "this server keeps no inboxes"}
	}
	if c.user == "" {
		return &protocol.Refusal{Code: protocol.Forbidden, Message: "an anonymous connection has no inbox"}
	}
	seq, err := parsePosition(id)
	if err != nil {
		return err
	}
	if c.inbox != nil { // a connection acknowledges only what it was given
		c.inbox.mu.Lock()
		seq = min(seq, c.inbox.last)
		c.inbox.mu.Unlock()
	}
	if seq == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	if err := c.b.inbox.Ack(ctx, c.user, seq); err != nil {
		c.b.log.Error("pubsub: acknowledging an inbox", "user", c.user, "err", err)
		return err
	}
	return nil
}
