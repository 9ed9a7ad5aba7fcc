// Package subject maps rooms, users and connections to NATS subjects.
//
// Every user-supplied token is base64url-encoded before it becomes part of a
// subject, so no input can form a wildcard ("*", ">"), add a token ("a.b"),
// or reach a reserved subject ("$SYS"). Validation on top of the encoding
// keeps names readable and bounded; the encoding is what makes them safe.
package subject

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxRoomLen and MaxUserLen bound names in bytes. A subject is carried on a
// NATS protocol line, so every token must stay far below the ~4 KB line limit
// even after base64 (4/3 growth).
const (
	MaxRoomLen = 128
	MaxUserLen = 256
)

var (
	ErrEmpty    = errors.New("empty")
	ErrTooLong  = errors.New("too long")
	ErrBadUTF8  = errors.New("not valid UTF-8")
	ErrBadChar  = errors.New(`contains a space, a control character, ".", "*" or ">"`)
	ErrReserved = errors.New(`starts with "$"`)
	ErrBadConn  = errors.New("not a connection id")
	ErrBadNS    = errors.New("namespace must be 1-32 characters of [A-Za-z0-9_-]")
)

// ValidRoom reports why room is not an acceptable room name, or nil.
// Rooms come from clients, so the grammar is strict: printable UTF-8 without
// whitespace, no NATS metacharacters, no leading "$".
func ValidRoom(room string) error {
	switch {
	case room == "":
		return ErrEmpty
	case len(room) > MaxRoomLen:
		return ErrTooLong
	case !utf8.ValidString(room):
		return ErrBadUTF8
	case room[0] == '$':
		return ErrReserved
	}
	for _, r := range room {
		if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return ErrBadChar
		}
	}
	return nil
}

// ValidUser reports why user is not an acceptable user id, or nil. User ids
// come from the host's own authentication (emails, UUIDs, "a.b"), so any
// printable UTF-8 is accepted; the encoding keeps it inside one token.
func ValidUser(user string) error {
	switch {
	case user == "":
		return ErrEmpty
	case len(user) > MaxUserLen:
		return ErrTooLong
	case !utf8.ValidString(user):
		return ErrBadUTF8
	}
	for _, r := range user {
		if !unicode.IsPrint(r) {
			return ErrBadChar
		}
	}
	return nil
}

// ValidNamespace reports whether ns can prefix every subject of a broker.
func ValidNamespace(ns string) error {
	if ns == "" || len(ns) > 32 || !isToken(ns, true) {
		return ErrBadNS
	}
	return nil
}

// Token characters of instance ids and connection counters. They need no
// encoding and cannot be wildcards.
func isToken(s string, allowPunct bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alnum && !(allowPunct && (c == '_' || c == '-')) {
			return false
		}
	}
	return true
}

// Space builds the subjects of one broker namespace.
type Space struct{ ns string }

// New returns the subject space under namespace ns (already validated).
func New(ns string) Space { return Space{ns: ns} }

var enc = base64.RawURLEncoding

// Room is the subject of a validated room name.
func (s Space) Room(room string) string { return s.ns + ".room." + enc.EncodeToString([]byte(room)) }

// Hist is where a message of a room with history is stored (the stream
// captures HistWildcard); Live is where the stream republishes it, with its
// sequence, once stored. Subscribers of such a room listen on Live.
func (s Space) Hist(room string) string { return s.ns + ".hist." + enc.EncodeToString([]byte(room)) }
func (s Space) Live(room string) string { return s.ns + ".live." + enc.EncodeToString([]byte(room)) }
func (s Space) HistWildcard() string    { return s.ns + ".hist.>" }
func (s Space) LiveWildcard() string    { return s.ns + ".live.>" }

// User is the subject of a validated user id.
func (s Space) User(user string) string { return s.ns + ".user." + enc.EncodeToString([]byte(user)) }

// Conn is the subject of a connection id produced by ConnID.
func (s Space) Conn(connID string) string { return s.ns + ".conn." + connID }

// ConnWildcard is the one subject an instance subscribes to for all of its
// connections.
func (s Space) ConnWildcard(instance string) string { return s.ns + ".conn." + instance + ".*" }

// ConnID joins an instance id and a per-instance counter into a connection
// id that is unique across instances and is itself two safe subject tokens.
func ConnID(instance, counter string) string { return instance + "." + counter }

// ParseConnID splits a connection id into its instance and counter, rejecting
// anything ConnID could not have produced.
func ParseConnID(id string) (instance, counter string, err error) {
	instance, counter, ok := strings.Cut(id, ".")
	if !ok || instance == "" || counter == "" || len(id) > 64 || !isToken(instance, false) || !isToken(counter, false) {
		return "", "", ErrBadConn
	}
	return instance, counter, nil
}

// Presence carries the presence changes and snapshots of room, from every
// instance; PresenceQuery asks every instance for its snapshot of a room;
// Instances carries instance heartbeats.
func (s Space) Presence(room string) string {
	return s.ns + ".pres." + enc.EncodeToString([]byte(room))
}
func (s Space) PresenceQuery() string { return s.ns + ".presq" }

// Inbox is where user's inbox messages are stored; the stream republishes
// each one (headers only) on InboxLive, the instances' cue to read.
func (s Space) Inbox(user string) string  { return s.ns + ".inbox." + enc.EncodeToString([]byte(user)) }
func (s Space) InboxWildcard() string     { return s.ns + ".inbox.>" }
func (s Space) InboxLiveWildcard() string { return s.ns + ".inboxlive.>" }

// InboxLiveUser returns the user whose inbox a republished subject names.
func (s Space) InboxLiveUser(subj string) (string, bool) {
	tok, ok := strings.CutPrefix(subj, s.ns+".inboxlive.")
	if !ok {
		return "", false
	}
	u, err := enc.DecodeString(tok)
	return string(u), err == nil
}

// Control is where instance answers operations on its connections;
// ControlAll, where every instance answers operations on a user's.
func (s Space) Control(instance string) string { return s.ns + ".ctl." + instance }
func (s Space) ControlAll() string             { return s.ns + ".ctlall" }

// Stats is where every instance answers for its counters.
func (s Space) Stats() string     { return s.ns + ".stats" }
func (s Space) Instances() string { return s.ns + ".presi" }
