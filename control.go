package pubsub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/control"
	"github.com/roomcast/pubsub/internal/protocol"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Server-side control: Go code acts on connections wherever they are, on
// any instance, by user (every connection of that user) or by connection
// id. Authorization is the host's: these are Go calls, made after the
// host's own checks (the chat example calls them from moderator-only
// routes). The client is told what happened with the frames it would get
// for its own request, marked "by":"server".
//
// An operation by connection id returns ErrNoSuchConn when the connection
// is known to be gone, and ctx's error when its instance does not answer in
// time. An operation by user returns how many connections it changed; it
// waits for every instance it knows to be alive, bounded by ctx and by
// ControlWait, and otherwise returns what it has with an error saying how
// many instances did not answer (wrapping context.DeadlineExceeded): an
// instance that died a moment ago still counts as alive until presence
// stops hearing from it (WithPresenceTimeout), and one that has just
// started may not be counted yet. Every instance must run a version with
// control: an older one does not answer, and a connection on it looks gone.

// ControlWait bounds an operation by user when ctx has no earlier
// deadline: an instance that died a moment ago still counts as alive until
// presence stops hearing from it.
const ControlWait = 2 * time.Second

// ConnInfo describes one connection, on any instance (UserConns).
type ConnInfo struct {
	ID        string    `json:"id"`
	Instance  string    `json:"instance"`
	User      string    `json:"user"`
	Transport string    `json:"transport"` // "websocket" or "sse"
	Rooms     []string  `json:"rooms"`     // sorted
	Since     time.Time `json:"since"`
	Expires   time.Time `json:"expires,omitzero"` // the session's expiry (ContextWithExpiry), zero for none
}

// Disconnect says how DisconnectUser and DisconnectConn end a connection.
// The zero value ends it for good: close code 4003, and the browser client
// does not reconnect.
type Disconnect struct {
	// Reason is told to the client as the close reason: valid UTF-8, at
	// most 123 bytes. Default "disconnected".
	Reason string
	// Reconnect lets the client come back later: close code 4004, which
	// the browser client answers with a long backoff (a "go away for now",
	// as when moving users off an instance). Without it, 4003.
	Reconnect bool
}

func (d Disconnect) code() (int, string, error) {
	reason := d.Reason
	if reason == "" {
		reason = "disconnected"
	}
	if !utf8.ValidString(reason) || len(reason) > 123 {
		return 0, "", fmt.Errorf("%w %q", ErrInvalidReason, truncate(reason))
	}
	if d.Reconnect {
		return CloseReconnectLater, reason, nil
	}
	return CloseDisconnected, reason, nil
}

// SubscribeConn subscribes the connection connID to room, on whatever
// instance it is, as Conn.Join does: without the subscribe hook, from the
// present on (no history replay). Subscribing it twice is not an error.
func (b *Broker) SubscribeConn(ctx context.Context, connID, room string) error {
	if err := validRoom(room); err != nil {
		return err
	}
	return b.toConn(ctx, control.Request{Op: control.Subscribe, Conn: connID, Room: room})
}

// UnsubscribeConn takes the connection connID out of room, as Conn.Leave
// does. Leaving a room it is not in is not an error.
func (b *Broker) UnsubscribeConn(ctx context.Context, connID, room string) error {
	if err := validRoom(room); err != nil {
		return err
	}
	return b.toConn(ctx, control.Request{Op: control.Unsubscribe, Conn: connID, Room: room})
}

// DisconnectConn ends the connection connID after what is already queued
// for it, with the close code and reason d gives.
func (b *Broker) DisconnectConn(ctx context.Context, connID string, d Disconnect) error {
	code, reason, err := d.code()
	if err != nil {
		return err
	}
	return b.toConn(ctx, control.Request{Op: control.Disconnect, Conn: connID, Code: code, Reason: reason})
}

// SubscribeUser subscribes every connection of user, on every instance, to
// room (see SubscribeConn) and returns how many it subscribed. A connection
// the user opens later is not subscribed: that is the host's to decide
// when it accepts it (Conn.Join, or rooms in the client's own URL).
func (b *Broker) SubscribeUser(ctx context.Context, user, room string) (int, error) {
	if err := validRoom(room); err != nil {
		return 0, err
	}
	return b.toUser(ctx, control.Request{Op: control.Subscribe, User: user, Room: room})
}

// UnsubscribeUser takes every connection of user out of room and returns
// how many were in it.
func (b *Broker) UnsubscribeUser(ctx context.Context, user, room string) (int, error) {
	if err := validRoom(room); err != nil {
		return 0, err
	}
	return b.toUser(ctx, control.Request{Op: control.Unsubscribe, User: user, Room: room})
}

// DisconnectUser ends every connection of user, on every instance, and
// returns how many it ended. It does not keep the user from connecting
// again: a ban is the host's middleware refusing the user, and then this
// call to end what is open.
func (b *Broker) DisconnectUser(ctx context.Context, user string, d Disconnect) (int, error) {
	code, reason, err := d.code()
	if err != nil {
		return 0, err
	}
	return b.toUser(ctx, control.Request{Op: control.Disconnect, User: user, Code: code, Reason: reason})
}

// UserConns lists the open connections of user on every instance, oldest
// first.
func (b *Broker) UserConns(ctx context.Context, user string) ([]ConnInfo, error) {
	if err := validUser(user); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, ControlWait)
	defer cancel()
	replies, err := b.ctl.ToAll(ctx, control.Request{Op: control.Conns, User: user})
	var all []ConnInfo
	for _, r := range replies {
		for _, in := range r.Conns {
			all = append(all, ConnInfo{ID: in.ID, Instance: in.Instance, User: in.User, Transport: in.Transport,
				Rooms: in.Rooms, Since: time.UnixMilli(in.Since), Expires: unixMilli(in.Expires)})
		}
	}
	slices.SortFunc(all, func(x, y ConnInfo) int { return x.Since.Compare(y.Since) })
	if err != nil {
		return all, fmt.Errorf("pubsub: listing %q's connections: %w", truncate(user), err)
	}
	return all, nil
}

func validRoom(room string) error {
	if err := subject.ValidRoom(room); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	return nil
}

func validUser(user string) error {
	if err := subject.ValidUser(user); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidUser, err)
	}
	return nil
}

func unixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func (b *Broker) toConn(ctx context.Context, req control.Request) error {
	_, err := b.toConnReply(ctx, req)
	return err
}

func (b *Broker) toConnReply(ctx context.Context, req control.Request) (control.Reply, error) {
	if _, _, err := subject.ParseConnID(req.Conn); err != nil {
		return control.Reply{}, fmt.Errorf("%w %q", ErrInvalidConnID, truncate(req.Conn))
	}
	rep, err := b.ctl.ToConn(ctx, req)
	switch {
	case errors.Is(err, control.ErrGone):
		return rep, fmt.Errorf("%w: %s (no instance answers for it)", ErrNoSuchConn, req.Conn)
	case errors.Is(err, nats.ErrConnectionClosed):
		return rep, ErrClosed
	case err != nil:
		return rep, fmt.Errorf("pubsub: %s %s: %w", req.Op, req.Conn, err)
	}
	return rep, replyErr(rep, req)
}

func (b *Broker) toUser(ctx context.Context, req control.Request) (int, error) {
	if err := validUser(req.User); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, ControlWait)
	defer cancel()
	replies, err := b.ctl.ToAll(ctx, req)
	if errors.Is(err, nats.ErrConnectionClosed) {
		return 0, ErrClosed
	}
	n := 0
	var first error
	for _, r := range replies {
		n += r.N
		if e := replyErr(r, req); e != nil && first == nil {
			first = e
		}
	}
	if err != nil {
		return n, fmt.Errorf("pubsub: %s user %q: %w", req.Op, truncate(req.User), errors.Join(err, first))
	}
	return n, first
}

func replyErr(rep control.Reply, req control.Request) error {
	target := req.Conn
	if target == "" {
		target = "a connection of " + strconv.Quote(truncate(req.User))
	}
	switch rep.Err {
	case "":
		return nil
	case control.ErrNoSuchConn:
		return fmt.Errorf("%w: %s", ErrNoSuchConn, target)
	case control.ErrTooMany:
		return fmt.Errorf("%w: %s", ErrTooManyRooms, target)
	case control.ErrBusy:
		return fmt.Errorf("%w: %s is handling another POSTed frame", errPostBusy, target)
	case control.ErrNotOwner:
		return fmt.Errorf("%w: %s is another user's connection", ErrForbidden, target)
	}
	return fmt.Errorf("pubsub: %s %s: the instance failed (%s)", req.Op, target, rep.Err)
}

// applyControl carries out a control request on this instance's
// connections: the one named, or every one of the user's.
func (b *Broker) applyControl(req control.Request) control.Reply {
	var targets []*Conn
	b.mu.RLock()
	if req.Conn != "" {
		if c := b.conns[req.Conn]; c != nil {
			targets = append(targets, c)
		}
	} else {
		for _, c := range b.conns {
			if c.user == req.User {
				targets = append(targets, c)
			}
		}
	}
	b.mu.RUnlock()
	if req.Conn != "" && len(targets) == 0 {
		return control.Reply{Err: control.ErrNoSuchConn}
	}
	one := req.Conn != "" // then a connection that is ending is one that is gone
	if one && targets[0].out.Closing() {
		return control.Reply{Err: control.ErrNoSuchConn}
	}
	var rep control.Reply
	for _, c := range targets {
		switch req.Op {
		case control.Subscribe:
			if subject.ValidRoom(req.Room) != nil {
				return control.Reply{Err: control.ErrInternal}
			}
			_, _, err := c.joinRoom(req.Room, wire.ServerMade("subscribed", req.Room), false)
			switch {
			case err == nil:
				rep.N++
			case errors.Is(err, ErrTooManyRooms):
				rep.Err = control.ErrTooMany
			case errors.Is(err, ErrClosed): // ending meanwhile
				if one {
					rep.Err = control.ErrNoSuchConn
				}
			default:
				b.log.Error("pubsub: subscribing a connection", "conn", c.id, "room", req.Room, "err", err)
				rep.Err = control.ErrInternal
			}
		case control.Unsubscribe:
			if c.leaveRoom(req.Room, wire.ServerMade("unsubscribed", req.Room), true) {
				rep.N++
			}
		case control.Disconnect:
			if req.Code != CloseDisconnected && req.Code != CloseReconnectLater {
				return control.Reply{Err: control.ErrInternal}
			}
			if c.closeWith(req.Code, req.Reason, fmt.Errorf("%w: %s", ErrDisconnected, req.Reason), true) {
				rep.N++
			} else if one {
				rep.Err = control.ErrNoSuchConn
			}
		case control.Conns:
			rep.Conns = append(rep.Conns, c.info())
			rep.N++
		case control.Frame:
			if c.user == "" || c.user != req.User {
				return control.Reply{Err: control.ErrNotOwner}
			}
			if !c.posted.CompareAndSwap(false, true) { // one at a time, in order: the client waits for each
				return control.Reply{Err: control.ErrBusy}
			}
			if !c.busy() { // closing: the connection must not end under it
				c.posted.Store(false)
				return control.Reply{Err: control.ErrNoSuchConn}
			}
			func() {
				defer c.posted.Store(false) // even if a host hook panics
				defer c.bg.Done()
				protocol.Handle(session{c: c}, req.Frame) // its answers go on the connection
			}()
			rep.N++
		case control.Refresh:
			if c.user == "" || c.user != req.User {
				return control.Reply{Err: control.ErrNotOwner}
			}
			if c.lease != nil && !c.lease.extend(unixMilli(req.Expires)) {
				return control.Reply{Err: control.ErrNoSuchConn} // it expired meanwhile
			}
			rep.N++
			rep.Expires = c.lease.expires().UnixMilli()
			if c.lease.expires().IsZero() {
				rep.Expires = 0
			}
		default:
			return control.Reply{Err: control.ErrInternal}
		}
	}
	return rep
}

func (c *Conn) info() control.Info {
	rooms := c.Rooms()
	slices.Sort(rooms)
	in := control.Info{ID: c.id, Instance: c.b.instance, User: c.user, Transport: c.Transport(),
		Rooms: rooms, Since: c.since.UnixMilli()}
	if e := c.lease.expires(); !e.IsZero() {
		in.Expires = e.UnixMilli()
	}
	return in
}
