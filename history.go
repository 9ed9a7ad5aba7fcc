package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/history"
	"github.com/roomcast/pubsub/internal/protocol"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// History is how much of a room's past the broker keeps. At least one
// limit must be set: nothing is kept forever.
type History struct {
	Messages int           // keep the room's last Messages messages (0: no count limit)
	MaxAge   time.Duration // drop messages older than MaxAge (0: no age limit)
}

// Message is a stored message of a room with history.
type Message struct {
	ID   string          // the id clients saw it with: its position in the store
	Room string          //
	From string          // the publishing client's user, "" for server code
	Data json.RawMessage //
	Time time.Time       // when it was stored
}

// Ack reports a published message.
type Ack struct {
	ID     string // the id subscribers receive the message with
	Stored bool   // the room has history: the message is stored
}

// MaxHistoryLimit bounds one History call and one client "history" request.
const MaxHistoryLimit = 1000

// PublishAck is Publish reporting the message's id. For a room with
// history it returns once the message is stored, so an HTTP handler can
// tell its caller the message is durable. It paces like Publish: a bare
// ctx error from the pacing wait means nothing was stored.
//
// What an acknowledgement survives depends on the store:
//
//   - in memory (the default without WithStoreDir): a restart of the app
//     loses it, unless the history is replicated (WithHistoryReplicas(3)
//     survives the loss of one node of three);
//   - on file (WithStoreDir): a killed or restarted process loses nothing
//     acknowledged; an OS crash or a power loss may lose the last writes,
//     which the store fsyncs every two minutes;
//   - on file with embedded.Options{SyncAlways: true}: each write is
//     fsynced before it is acknowledged, so a crash or power loss loses
//     nothing acknowledged either, at about 5× the latency of a publish
//     and 1/8 of the throughput of concurrent publishers (BENCHMARKS.md).
//     It is off by default for that cost: replication covers a lost node,
//     and a process crash is covered without it.
//
// A store that does not answer in time or has no leader for a moment (an
// election, a node restarting) is retried until ctx ends, and the retries
// cannot store the message twice (they stop after 90 s, inside the store's
// two-minute duplicate window). If ctx ends while an attempt may have
// been stored, the error is ErrOutcomeUnknown: a message published with
// PublishOnce can be published again with the same key and is stored at
// most once (within two minutes). A store that cannot write (its disk
// full) gives ErrStoreFailed, and fails the publishes that follow at once
// until it recovers. Rooms without history are at most once.
func (b *Broker) PublishAck(ctx context.Context, room string, data []byte) (Ack, error) {
	return b.publishAck(ctx, room, "", data)
}

// PublishOnce is PublishAck for a message identified by key, so that
// publishing it again (after ErrOutcomeUnknown, a timeout, a restart of the
// caller) stores it once: in a room with history, a second publish with
// the same room and key within two minutes is not stored and returns the
// first one's Ack. A key is 1 to 64 printable characters without spaces
// (ErrInvalidKey otherwise), unique per message within the room: the id of
// the request or event that causes the publish makes a good one. Rooms
// without history ignore the key.
func (b *Broker) PublishOnce(ctx context.Context, room, key string, data []byte) (Ack, error) {
	if !wire.ValidKey(key) {
		return Ack{}, fmt.Errorf("%w %q", ErrInvalidKey, truncate(key))
	}
	return b.publishAck(ctx, room, "s "+room+" "+key, data)
}

func (b *Broker) publishAck(ctx context.Context, room, msgID string, data []byte) (Ack, error) {
	if err := subject.ValidRoom(room); err != nil {
		return Ack{}, fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	ack, err := b.publishRoom(ctx, room, "", msgID, data)
	if err == nil {
		b.stats.Published(false)
	}
	return ack, err
}

// publishRoom publishes to a validated room: stored first for a room with
// history, straight to subscribers otherwise.
// msgID is the store's de-duplication id ("": one of its own, so that its
// retries stay safe).
func (b *Broker) publishRoom(ctx context.Context, room, from, msgID string, data []byte) (Ack, error) {
	rule, ok := b.hist.Rule(room)
	if !ok {
		id, err := b.send(ctx, b.subjects.Room(room), from, data)
		return Ack{ID: id}, err
	}
	if err := ctx.Err(); err != nil {
		return Ack{}, err
	}
	data, err := b.checkData(data)
	if err != nil {
		return Ack{}, err
	}
	if err := b.fan.Admit(ctx); err != nil {
		return Ack{}, err
	}
	if msgID == "" {
		msgID = "g " + b.nextMessageID()
	}
	seq, err := b.hist.Publish(ctx, room, rule, wire.Envelope{From: from, Data: data}, msgID)
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrConnectionClosed):
		return Ack{}, ErrClosed
	case errors.Is(err, history.ErrOutcomeUnknown) && errors.Is(err, history.ErrStoreFailed):
		b.tellStoreFailed(room)
		return Ack{}, fmt.Errorf("%w (room %q): %w: %v", ErrOutcomeUnknown, room, ErrStoreFailed, err)
	case errors.Is(err, history.ErrOutcomeUnknown):
		return Ack{}, fmt.Errorf("%w (room %q): %v", ErrOutcomeUnknown, room, err)
	case errors.Is(err, history.ErrStoreFailed):
		b.tellStoreFailed(room)
		return Ack{}, fmt.Errorf("%w (room %q): %v", ErrStoreFailed, room, err)
	default:
		return Ack{}, fmt.Errorf("pubsub: storing: %w", err)
	}
	return Ack{ID: strconv.FormatUint(seq, 10), Stored: true}, nil
}

// History returns up to limit (at most MaxHistoryLimit) of the most recent
// stored messages of room, oldest first. It reads the room's whole retained
// history, so its cost grows with the room's limits. Authorize callers as
// for a subscription: clients asking through the protocol are checked with
// the subscribe hook.
func (b *Broker) History(ctx context.Context, room string, limit int) ([]Message, error) {
	if err := subject.ValidRoom(room); err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	if _, ok := b.hist.Rule(room); !ok {
		return nil, ErrNoHistory
	}
	stored, err := b.hist.Last(ctx, room, min(max(limit, 0), MaxHistoryLimit))
	if err != nil {
		return nil, fmt.Errorf("pubsub: %w", err)
	}
	msgs := make([]Message, len(stored))
	for i, m := range stored {
		msgs[i] = Message{ID: strconv.FormatUint(m.Seq, 10), Room: room, From: m.From, Data: m.Data, Time: m.Time}
	}
	return msgs, nil
}

// roomSubject is the subject subscribers of room listen on.
func (b *Broker) roomSubject(room string) string {
	if _, ok := b.hist.Rule(room); ok {
		return b.subjects.Live(room)
	}
	return b.subjects.Room(room)
}

// parsePosition parses a client's resume position.
func parsePosition(id string) (uint64, error) {
	p, err := strconv.ParseUint(id, 10, 64)
	if err != nil || p == 0 || len(id) > 20 || id[0] == '+' {
		return 0, fmt.Errorf("%w %q: a resume position is the id of a message of a room with history", ErrInvalidID, truncate(id))
	}
	return p, nil
}

// startResume resumes rooms (joined held) from position after, in a
// goroutine of the connection.
func (c *Conn) startResume(rooms map[*fanout.Topic]string, after uint64, ref json.RawMessage) {
	if len(rooms) > 0 && c.busy() {
		go func() {
			defer c.bg.Done()
			c.gate.Resume(c.ctx, c.b.hist, rooms, after, ref, c.b.cfg.writeTimeout, resumeOwner{c})
		}()
	}
}

// resumeOwner is a connection as its resume sees it.
type resumeOwner struct{ c *Conn }

func (o resumeOwner) Slow() { o.c.closeSlow() }
func (o resumeOwner) Failed(err error) {
	b := o.c.b
	if ok, suppressed := b.logNoisy.Allow("resume-failed"); ok {
		b.log.Warn("pubsub: a resume could not read history in time; the client reconnects and resumes (1013)",
			"conn", o.c.id, "user", o.c.user, "err", err, "suppressed", suppressed)
	}
	o.c.closeWith(CloseTryAgainLater, "history unavailable, resume again", err, false)
}

var _ history.Owner = resumeOwner{}

// tellStoreFailed tells room's subscribers on this instance, once per
// failure, that messages to the room are refused.
func (b *Broker) tellStoreFailed(room string) {
	if b.hist.Tell(room) {
		b.fan.Notify(b.roomSubject(room), wire.Error(protocol.StoreFailed, "history cannot store messages now: messages to this room are refused", room, nil))
	}
}
