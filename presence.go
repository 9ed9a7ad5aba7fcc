package pubsub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roomcast/pubsub/internal/presence"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Presence is who is in a room, across every instance: one page of its
// members, and counts of the whole room. It encodes to JSON as the
// client's presence frame does.
type Presence struct {
	// Count is the number of distinct users in the room. A user with two
	// tabs open is one member.
	Count int `json:"count"`
	// Conns is the number of connections in the room, anonymous ones
	// (connections without a user) included.
	Conns int `json:"conns"`
	// Members is one page of the room's users, ordered by user id.
	Members []Member `json:"members"`
	// Next is the cursor of the following page (the after argument of
	// PresencePage), or "" on the last page.
	Next string `json:"next,omitempty"`
}

// Member is one user in a room.
type Member struct {
	User  string `json:"user"`
	Conns int    `json:"conns"` // the user's connections in the room, on all instances
}

// Presence defaults and bounds.
const (
	// DefaultPresenceTimeout is how long the entries of an instance that
	// stopped answering (killed, partitioned away) stay in presence.
	DefaultPresenceTimeout = 15 * time.Second
	// DefaultPresencePage is the page size of Presence and of a client's
	// presence request without a limit; MaxPresencePage bounds any page.
	DefaultPresencePage = 100
	MaxPresencePage     = 1000
)

// Presence reports who is in room, on every instance: the counts and the
// first page of members (DefaultPresencePage). A connection is in a room
// from its subscription (or Conn.Join) until it leaves or closes.
//
// Presence is kept by each instance for the rooms someone asks about: the
// first call for a room gathers a snapshot from every instance (one round
// trip); later calls, and the counts, are answered from memory, kept up to
// date by one small NATS message per join and leave.
func (b *Broker) Presence(ctx context.Context, room string) (Presence, error) {
	return b.PresencePage(ctx, room, "", DefaultPresencePage)
}

// PresencePage is Presence for the page of at most limit members (1 to
// MaxPresencePage) whose user ids sort after after.
func (b *Broker) PresencePage(ctx context.Context, room, after string, limit int) (Presence, error) {
	if err := subject.ValidRoom(room); err != nil {
		return Presence{}, fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	if limit < 1 || limit > MaxPresencePage {
		return Presence{}, fmt.Errorf("pubsub: presence page limit must be 1 to %d", MaxPresencePage)
	}
	pg, err := b.presencePage(ctx, room, "", after, limit)
	if err != nil {
		return Presence{}, err
	}
	ps := Presence{Count: pg.Count, Conns: pg.Conns, Next: pg.Next, Members: make([]Member, len(pg.Members))}
	for i, m := range pg.Members {
		ps.Members[i] = Member{User: m.User, Conns: m.Conns}
	}
	return ps, nil
}

// presencePage asks the tracker, in the broker's errors.
func (b *Broker) presencePage(ctx context.Context, room, asker, after string, limit int) (wire.PresencePage, error) {
	pg, err := b.pres.Page(ctx, room, asker, after, limit)
	switch {
	case errors.Is(err, presence.ErrClosed):
		return pg, ErrClosed
	case errors.Is(err, presence.ErrTooManyRooms), errors.Is(err, presence.ErrTooManyRoomsForUser):
		return pg, fmt.Errorf("%w: %w", ErrTooManyRooms, err)
	}
	return pg, err
}
