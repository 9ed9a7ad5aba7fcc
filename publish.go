package pubsub

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Publish sends data, one JSON value, to every connection in room, on every
// instance. For a room without history it returns once NATS has the message
// and delivery is at most once; for a room with history (WithHistory) it
// returns once the message is stored, and clients that reconnect get it.
// PublishAck also reports the message's id; see it for retries, and
// PublishOnce for a publish that is safe to repeat.
//
// Pacing: Publish, PublishAck, PublishOnce, SendToUser, SendToConn and the
// publishes of clients wait while 16,384 or more messages are waiting for
// this instance's fan-out, until fewer are, so that a loop of publishes goes
// at the pace the instance delivers instead of overflowing it (NATS drops
// what an instance cannot take in); every 16,384th also waits for NATS to
// hand this instance what it still holds for it (a flush). The wait lasts at
// most 5 s and at most half of what is left of ctx's deadline; then the
// message is published anyway. A ctx canceled during the wait ends it with
// ctx's error, and then nothing was published or stored. Conn.Send queues
// locally and never waits.
func (b *Broker) Publish(ctx context.Context, room string, data []byte) error {
	_, err := b.PublishAck(ctx, room, data)
	return err
}

// SendToUser sends data to every connection of user, on every instance.
// It returns once NATS has the message (delivery is at most once), after
// the pacing wait Publish describes when this instance's fan-out is behind.
func (b *Broker) SendToUser(ctx context.Context, user string, data []byte) error {
	if err := subject.ValidUser(user); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidUser, truncate(user), err)
	}
	return b.sendFromServer(ctx, b.subjects.User(user), data)
}

// SendToConn sends data to the one connection with id connID (see Conn.ID
// and the "welcome" frame), whichever instance holds it. Like every send it
// is fire-and-forget: a connection that has gone away is not reported. It
// paces like Publish.
func (b *Broker) SendToConn(ctx context.Context, connID string, data []byte) error {
	if _, _, err := subject.ParseConnID(connID); err != nil {
		return fmt.Errorf("%w %q", ErrInvalidConnID, truncate(connID))
	}
	return b.sendFromServer(ctx, b.subjects.Conn(connID), data)
}

// sendFromServer is send for Go code's messages, counted as published.
func (b *Broker) sendFromServer(ctx context.Context, subj string, data []byte) error {
	_, err := b.send(ctx, subj, "", data)
	if err == nil {
		b.stats.Published(false)
	}
	return err
}

// send publishes data on subj and returns the message id.
func (b *Broker) send(ctx context.Context, subj, from string, data []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	data, err := b.checkData(data)
	if err != nil {
		return "", err
	}
	if err := b.fan.Admit(ctx); err != nil {
		return "", err
	}
	id := b.nextMessageID()
	payload := wire.AppendEnvelope(make([]byte, 0, 32+len(from)+len(data)), wire.Envelope{ID: id, From: from, Data: data})
	if err := b.nc.Publish(subj, payload); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return "", ErrClosed
		}
		return "", fmt.Errorf("pubsub: publish: %w", err)
	}
	return id, nil
}

// checkData returns data as one compact JSON value within the size limit.
func (b *Broker) checkData(data []byte) ([]byte, error) {
	if len(data) > b.cfg.maxMessage {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), b.cfg.maxMessage)
	}
	data, ok := wire.CompactJSON(data)
	if !ok {
		return nil, ErrInvalidData
	}
	return data, nil
}

func (b *Broker) nextMessageID() string {
	return b.instance + "-" + strconv.FormatUint(b.msgSeq.Add(1), 36)
}
