package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/presence"
	"github.com/roomcast/pubsub/internal/protocol"
	"github.com/roomcast/pubsub/internal/stats"
	"github.com/roomcast/pubsub/internal/wire"
)

// session is a connection as the client-frame protocol sees it
// (internal/protocol): the operations a client may ask for, authorized by
// the host's hooks, in the broker's errors. yield hands "send" frames to
// the host's Messages loop (nil: the endpoint takes none).
type session struct {
	c     *Conn
	yield func([]byte) bool
}

var _ protocol.Session = session{}

func (s session) Reply(f *wire.Frame) { s.c.reply(f) }

func (s session) Subscribe(room, lastID string, watch bool, ref json.RawMessage) error {
	c := s.c
	if err := c.authorize(c.b.cfg.authSubscribe, "subscribe", room); err != nil {
		return err
	}
	var pos uint64
	if _, ok := c.b.hist.Rule(room); ok && lastID != "" {
		var err error
		if pos, err = parsePosition(lastID); err != nil {
			return err
		}
	}
	t, added, err := c.joinRoom(room, wire.Reply("subscribed", room, "", ref), pos > 0)
	if added && pos > 0 {
		c.startResume(map[*fanout.Topic]string{t: room}, pos, ref)
	}
	if err == nil && watch {
		err = c.watch(room)
	}
	switch {
	case err == nil, errors.Is(err, ErrClosed):
		return nil
	case errors.Is(err, ErrTooManyRooms):
		return &protocol.Refusal{Code: protocol.TooManyRooms, Message: fmt.Sprintf("at most %d rooms per connection", c.b.cfg.maxRooms)}
	case errors.As(err, new(*protocol.Refusal)):
		return err
	}
	c.b.log.Error("pubsub: subscribe", "room", room, "err", err)
	return err
}

func (s session) Unsubscribe(room string, ref json.RawMessage) error {
	s.c.leaveRoom(room, wire.Reply("unsubscribed", room, "", ref), false)
	return nil
}

func (s session) Publish(room, key string, data []byte) (string, error) {
	c := s.c
	if c.b.cfg.authPublish == nil {
		c.b.stats.Deny(stats.DeniedPublish)
		return "", &protocol.Refusal{Code: protocol.Forbidden, Message: "client publish is disabled"}
	}
	if err := c.authorize(c.b.cfg.authPublish, "publish", room); err != nil {
		return "", err
	}
	msgID := ""
	if key != "" { // scoped: one user's (or anonymous connection's) keys cannot suppress another's messages
		msgID = "c " + c.asker() + " " + room + " " + key
	}
	// A request is answered on the connection's read loop: bounded, so the
	// connection keeps answering pings, and a store that does not answer
	// gives the client outcome_unknown (then it retries with its key).
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	ack, err := c.b.publishRoom(ctx, room, c.user, msgID, data)
	switch {
	case err == nil:
		c.b.stats.Published(true)
	case c.ctx.Err() != nil: // the connection is closing: nothing to report
	case protocol.Code(err) == protocol.Internal:
		c.b.log.Error("pubsub: client publish", "room", room, "err", err)
	}
	return ack.ID, err
}

func (s session) History(room string, limit int) ([]wire.Stored, error) {
	c := s.c
	if err := c.authorize(c.b.cfg.authSubscribe, "history", room); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	msgs, err := c.b.History(ctx, room, limit)
	if err != nil {
		if protocol.Code(err) == protocol.Internal {
			c.b.log.Error("pubsub: history", "room", room, "err", err)
		}
		return nil, err
	}
	stored := make([]wire.Stored, len(msgs))
	for i, m := range msgs {
		stored[i] = wire.Stored{ID: m.ID, From: m.From, Data: m.Data, Time: m.Time}
	}
	return stored, nil
}

func (s session) Presence(room, after string, limit int) (wire.PresencePage, error) {
	c := s.c
	if err := c.authorize(c.b.cfg.authSubscribe, "presence", room); err != nil {
		return wire.PresencePage{}, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	pg, err := c.b.presencePage(ctx, room, c.asker(), after, limit)
	switch {
	case err == nil:
	case errors.Is(err, presence.ErrTooManyRoomsForUser):
		err = &protocol.Refusal{Code: protocol.TooManyRooms, Message: "presence is not available for more rooms for this user now"}
	case errors.Is(err, ErrTooManyRooms):
		err = &protocol.Refusal{Code: protocol.TooManyRooms, Message: "presence is not available for more rooms now"}
	case !errors.Is(err, ErrClosed):
		c.b.log.Error("pubsub: presence", "room", room, "err", err)
	}
	return pg, err
}

func (s session) Send(data []byte) (accepted, more bool) {
	if s.yield == nil {
		return false, true
	}
	return true, s.yield(data)
}

// watch makes the connection receive room's presence frame and events.
func (c *Conn) watch(room string) error {
	err := c.b.pres.Watch(c.ctx, watcher{c}, room, c.asker(), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.closing && c.rooms[room] != nil
	})
	switch {
	case errors.Is(err, presence.ErrClosed):
		return ErrClosed
	case errors.Is(err, presence.ErrTooManyRooms):
		return &protocol.Refusal{Code: protocol.TooManyRooms, Message: "presence is not available for more rooms now"}
	case errors.Is(err, presence.ErrTooManyRoomsForUser):
		return &protocol.Refusal{Code: protocol.TooManyRooms, Message: "presence is not available for more rooms for this user now"}
	}
	return err
}

// asker is who a presence request counts against: the user, or the
// connection itself when anonymous.
func (c *Conn) asker() string {
	if c.user != "" {
		return "u:" + c.user
	}
	return "c:" + c.id
}

// authorize runs hook (nil allows everything) and logs a denial.
func (c *Conn) authorize(hook AuthorizeFunc, action, room string) error {
	if hook == nil {
		return nil
	}
	if err := hook(c.ctx, c.user, room); err != nil {
		c.b.log.Debug("pubsub: denied", "action", action, "room", room, "user", c.user, "err", err)
		c.b.stats.Deny(denialOf(action))
		return fmt.Errorf("%w: %v", ErrForbidden, err)
	}
	return nil
}

// denialOf is an authorized action's count in Stats.Denied.
func denialOf(action string) int {
	switch action {
	case "publish":
		return stats.DeniedPublish
	case "history":
		return stats.DeniedHistory
	case "presence":
		return stats.DeniedPresence
	}
	return stats.DeniedSubscribe
}

// requestTimeout bounds a client's publish, history and presence request,
// which run on the connection's read loop: well under the keep-alive's pong
// timeout.
const requestTimeout = 5 * time.Second
