// Package protocol handles the frames a client sends (PROTOCOL.md §5),
// whatever the transport: it parses and checks each frame, calls the
// connection's Session for the operation, and answers with the reply or an
// error frame whose code PROTOCOL.md §6 lists. Operations refuse with errors
// that carry their code (see Code); anything else is "internal", and its
// text never reaches the client.
package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Session is a connection as the protocol sees it.
type Session interface {
	// Reply queues a frame for the client.
	Reply(f *wire.Frame)
	// Subscribe joins room, resuming after lastID where the room keeps
	// history, and queues "subscribed" (carrying ref) in the same step.
	// With presence, the room's presence frame and events follow.
	Subscribe(room, lastID string, presence bool, ref json.RawMessage) error
	// Unsubscribe leaves room and queues "unsubscribed".
	Unsubscribe(room string, ref json.RawMessage) error
	// Publish publishes data to room as the connection's user and returns
	// the message's id.
	// Publish publishes data to room; key, when not empty, is the client's
	// idempotency key (a retry with the same key is stored once).
	Publish(room, key string, data []byte) (id string, err error)
	// History returns the room's last stored messages, at most limit.
	History(room string, limit int) ([]wire.Stored, error)
	// Presence returns the room's counts and one page of members.
	Presence(room, after string, limit int) (wire.PresencePage, error)
	// Call starts answering a call of method and returns at once; the
	// answer ("reply" or an error frame, carrying ref) comes later.
	Call(method string, data []byte, timeout time.Duration, ref json.RawMessage) error
	// Ack acknowledges the connection's inbox up to the message id.
	Ack(id string) error
	// Send hands data to the application that accepted the connection.
	// It reports whether the endpoint takes messages at all, and whether
	// the connection goes on (false: the application stopped reading).
	Send(data []byte) (accepted, more bool)
}

// Codes of error frames (PROTOCOL.md §6).
const (
	BadRequest   = "bad_request"
	InvalidRoom  = "invalid_room"
	Forbidden    = "forbidden"
	TooManyRooms = "too_many_rooms"
	Unsupported  = "unsupported"
	NoHistory    = "no_history"
	InvalidID    = "invalid_id"
	Internal     = "internal"
	// OutcomeUnknown: a publish may or may not have been stored (the
	// store did not answer in time); the same frame with the same "key"
	// is stored at most once.
	OutcomeUnknown = "outcome_unknown"
	// StoreFailed: the history store cannot write (a full disk, an I/O
	// error); the message is not stored.
	StoreFailed = "store_failed"
	// NoHandler: a call of a method the server has no handler for.
	NoHandler = "no_handler"
	// TooManyCalls: the connection has as many unanswered calls as allowed.
	TooManyCalls = "too_many_calls"
	// Timeout: a call was not answered within its timeout.
	Timeout = "timeout"
	// NoInbox: an "ack" to a server that keeps no inboxes.
	NoInbox = "no_inbox"
)

// Coder is an error that names its client code.
type Coder interface {
	error
	ProtocolCode() string
}

// Refusal is an error whose code and text are both the client's to read.
type Refusal struct{ Code, Message string }

func (r *Refusal) Error() string        { return r.Message }
func (r *Refusal) ProtocolCode() string { return r.Code }

// Code returns the client code of err: the Coder it wraps, or Internal.
func Code(err error) string {
	var c Coder
	if errors.As(err, &c) {
		return c.ProtocolCode()
	}
	return Internal
}

// Limits of client requests.
const (
	DefaultHistory  = 50   // messages of a history request without a limit
	MaxHistory      = 100  // one frame holds them all
	DefaultPresence = 100  // members of a presence request without a limit
	MaxPresence     = 1000 // members of a presence page
)

// Handle acts on one client frame. It returns false when the connection
// must end (the application stopped reading its messages).
func Handle(s Session, p []byte) bool {
	f, err := wire.ParseClientFrame(p)
	if err != nil {
		s.Reply(wire.Error(BadRequest, err.Error(), "", f.Ref))
		return true
	}
	switch f.Type {
	case "subscribe", "unsubscribe", "publish", "history", "presence":
		if err := subject.ValidRoom(f.Room); err != nil {
			s.Reply(wire.Error(InvalidRoom, "invalid room name: "+err.Error(), Truncate(f.Room), f.Ref))
			return true
		}
	}
	switch f.Type {
	case "subscribe":
		Subscribe(s, f.Room, f.LastID, f.Presence, f.Ref)
	case "unsubscribe":
		if err := s.Unsubscribe(f.Room, f.Ref); err != nil {
			refuse(s, "unsubscribe", err, f)
		}
	case "publish":
		if len(f.Data) == 0 {
			s.Reply(wire.Error(BadRequest, `"data" must be a JSON value`, f.Room, f.Ref))
			return true
		}
		id, err := s.Publish(f.Room, f.Key, f.Data)
		switch {
		case err != nil:
			refuse(s, "publish", err, f)
		case len(f.Ref) > 0:
			s.Reply(wire.Reply("published", f.Room, id, f.Ref))
		}
	case "history":
		if f.Limit < 0 || f.Limit > MaxHistory {
			s.Reply(wire.Error(BadRequest, fmt.Sprintf(`"limit" must be 0 to %d`, MaxHistory), f.Room, f.Ref))
			return true
		}
		msgs, err := s.History(f.Room, cmpOr(f.Limit, DefaultHistory))
		if err != nil {
			refuse(s, "history", err, f)
			return true
		}
		s.Reply(wire.HistoryFrame(f.Room, msgs, f.Ref))
	case "presence":
		if f.Limit < 0 || f.Limit > MaxPresence {
			s.Reply(wire.Error(BadRequest, fmt.Sprintf(`"limit" must be 0 to %d`, MaxPresence), f.Room, f.Ref))
			return true
		}
		pg, err := s.Presence(f.Room, f.After, cmpOr(f.Limit, DefaultPresence))
		if err != nil {
			refuse(s, "presence", err, f)
			return true
		}
		s.Reply(wire.PresenceFrame(f.Room, pg, f.Ref))
	case "send":
		data, ok := wire.CompactJSON(f.Data)
		if !ok || len(f.Data) == 0 {
			s.Reply(wire.Error(BadRequest, `"data" must be a JSON value`, "", f.Ref))
			return true
		}
		accepted, more := s.Send(data)
		if !accepted {
			s.Reply(wire.Error(Unsupported, "this endpoint takes no send frames", "", f.Ref))
		}
		return more
	case "call":
		if f.Method == "" || len(f.Method) > 64 || !utf8.ValidString(f.Method) || strings.ContainsFunc(f.Method, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) {
			s.Reply(wire.Error(BadRequest, `"method" must be 1 to 64 printable characters without spaces`, "", f.Ref))
			return true
		}
		if f.Timeout < 0 {
			s.Reply(wire.Error(BadRequest, `"timeout" must be milliseconds, 0 for the server's limit`, "", f.Ref))
			return true
		}
		data := f.Data
		if len(data) > 0 {
			var ok bool
			if data, ok = wire.CompactJSON(data); !ok {
				s.Reply(wire.Error(BadRequest, `"data" must be a JSON value`, "", f.Ref))
				return true
			}
		}
		if err := s.Call(f.Method, data, time.Duration(f.Timeout)*time.Millisecond, f.Ref); err != nil {
			refuse(s, "call", err, f)
		}
	case "ack":
		if err := s.Ack(f.ID); err != nil {
			refuse(s, "ack", err, f)
		} else if len(f.Ref) > 0 {
			s.Reply(wire.Reply("acked", "", f.ID, f.Ref))
		}
	case "ping":
		s.Reply(wire.Reply("pong", "", "", f.Ref))
	default:
		s.Reply(wire.Error(BadRequest, "unknown frame type", "", f.Ref))
	}
	return true
}

// Subscribe subscribes as a "subscribe" frame does, answering a refusal
// with an error frame: also for the rooms a WebSocket names in its URL.
func Subscribe(s Session, room, lastID string, presence bool, ref json.RawMessage) {
	f := wire.ClientFrame{Type: "subscribe", Room: room, Ref: ref}
	if err := subject.ValidRoom(room); err != nil {
		s.Reply(wire.Error(InvalidRoom, "invalid room name: "+err.Error(), Truncate(room), ref))
		return
	}
	if err := s.Subscribe(room, lastID, presence, ref); err != nil {
		refuse(s, "subscribe", err, f)
	}
}

// refusals are the texts of refusals whose error text is not the client's
// to read (it may name the host's reasons).
var refusals = map[string]map[string]string{
	Forbidden: {
		"subscribe": "not allowed to subscribe to this room",
		"publish":   "not allowed to publish to this room",
		"history":   "not allowed to read this room",
		"presence":  "not allowed to see this room",
	},
	TooManyRooms: {
		"presence": "presence is not available for more rooms now",
	},
	NoHistory:      {"history": "this room keeps no history"},
	OutcomeUnknown: {"publish": "the message may or may not have been stored: send it again with the same key"},
	StoreFailed:    {"publish": "history cannot store messages now"},
	Internal: {
		"subscribe":   "subscribe failed",
		"unsubscribe": "unsubscribe failed",
		"publish":     "publish failed",
		"history":     "history failed",
		"presence":    "presence failed",
		"call":        "the call failed",
		"ack":         "acknowledging the inbox failed",
	},
}

// refuse answers a failed operation with its code and a text safe to show.
func refuse(s Session, op string, err error, f wire.ClientFrame) {
	code := Code(err)
	var r *Refusal
	msg := refusals[code][op]
	switch {
	case errors.As(err, &r):
		msg = r.Message
	case msg == "":
		// The error describes the client's own input, or a limit.
		msg = strings.TrimPrefix(err.Error(), "pubsub: ")
	}
	s.Reply(wire.Error(code, msg, f.Room, f.Ref))
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Truncate keeps hostile input out of replies and logs at full size.
func Truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for cut > 0 && s[cut]&0xC0 == 0x80 { // not a rune's first byte
		cut--
	}
	return s[:cut] + "…"
}
