package client

import (
	"errors"
	"fmt"
)

// Error is an error the server answered to a request (an "error" frame,
// PROTOCOL.md §6), or told a subscription about. Compare it with the
// sentinels below using errors.Is, which matches on Code alone.
type Error struct {
	Code    string // "forbidden", "invalid_room", a call handler's own code…
	Message string
	Room    string // the room it is about, if any
	Key     string // of a refused Publish: send again with PublishOnce and this key
}

func (e *Error) Error() string {
	s := "roomcast: " + e.Code
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Room != "" {
		s += " (room " + e.Room + ")"
	}
	return s
}

// Is reports whether target is an *Error with the same Code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is. The full list of codes is PROTOCOL.md §6.
var (
	ErrForbidden      = &Error{Code: "forbidden"}
	ErrInvalidRoom    = &Error{Code: "invalid_room"}
	ErrTooManyRooms   = &Error{Code: "too_many_rooms"}
	ErrNoHistory      = &Error{Code: "no_history"}
	ErrInvalidID      = &Error{Code: "invalid_id"}
	ErrOutcomeUnknown = &Error{Code: "outcome_unknown"}
	ErrStoreFailed    = &Error{Code: "store_failed"}
	ErrNoHandler      = &Error{Code: "no_handler"}
	ErrTimeout        = &Error{Code: "timeout"}
	ErrNoInbox        = &Error{Code: "no_inbox"}

	// ErrTruncated, yielded by Subscription.Messages, is not final: the
	// server no longer held everything after the subscription's last id, so
	// messages may be missing before the next one. Refetch the room's state.
	ErrTruncated = &Error{Code: "truncated", Message: "messages may be missing: the server's history no longer holds them"}

	// ErrInboxTruncated, yielded by Client.Inbox, is not final: the inbox was
	// full when read and its oldest messages may have been dropped.
	ErrInboxTruncated = &Error{Code: "inbox_truncated", Message: "the inbox was full: older messages may have been dropped"}
)

// truncatedIn is ErrTruncated about room (errors.Is matches it).
func truncatedIn(room string) *Error {
	return &Error{Code: ErrTruncated.Code, Message: ErrTruncated.Message, Room: room}
}

var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("roomcast: client closed")

	// ErrUnsubscribed ends a Subscription's iterators after Unsubscribe, or
	// when server code took the connection out of the room.
	ErrUnsubscribed = errors.New("roomcast: unsubscribed")

	// ErrConnectionLost: the connection ended before a Call or Send was
	// answered, so whether the server acted is unknown; or a request that
	// is retried (History, Presence, Ack, Publish's) lost three connections
	// in a row.
	ErrConnectionLost = errors.New("roomcast: connection lost before the answer")
)

// DroppedError, yielded by an iterator, is not final: its buffer (Options.Buffer)
// was full because the caller read too slowly, and N items were dropped.
type DroppedError struct{ N int }

func (e *DroppedError) Error() string {
	return fmt.Sprintf("roomcast: %d messages dropped: read faster or raise Options.Buffer", e.N)
}

// CloseError is why the client stopped for good: the server ended the
// connection with a code the client must not retry (4003 disconnected by
// the server, 4005 session expired and the host refuses it), or refused it
// (Status: the host's 401/403, or 500 misconfigured, 400 unsupported_protocol).
type CloseError struct {
	Code   int    // the WebSocket close code, or 1008 for an HTTP refusal
	Reason string // the close reason, or the Roomcast-Error header
	Status int    // the HTTP status of a refusal, 0 for a close
}

func (e *CloseError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("roomcast: refused with HTTP %d %s", e.Status, e.Reason)
	}
	return fmt.Sprintf("roomcast: closed by the server (%d %s)", e.Code, e.Reason)
}
