// Package wire holds the two encodings of a message: the compact envelope
// carried between instances on NATS, and the JSON frames sent to clients.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// version is the first byte of every NATS payload, so that instances running
// a later protocol can reject what they cannot read instead of misreading it.
const version = 1

var ErrPayload = errors.New("malformed payload")

// Envelope is what a publisher sends on NATS. The receiving instance turns it
// into a client frame once and shares that frame with all local connections.
type Envelope struct {
	ID   string // message id, assigned by the publisher
	From string // user id of a client publisher, "" for server code
	Data []byte // one compact JSON value
}

// AppendEnvelope appends the NATS encoding of e to dst.
func AppendEnvelope(dst []byte, e Envelope) []byte {
	dst = append(dst, version)
	dst = binary.AppendUvarint(dst, uint64(len(e.ID)))
	dst = append(dst, e.ID...)
	dst = binary.AppendUvarint(dst, uint64(len(e.From)))
	dst = append(dst, e.From...)
	return append(dst, e.Data...)
}

// ParseEnvelope decodes p. The returned strings are copies; Data aliases p.
func ParseEnvelope(p []byte) (Envelope, error) {
	if len(p) == 0 || p[0] != version {
		return Envelope{}, ErrPayload
	}
	p = p[1:]
	id, p, ok := field(p)
	if !ok {
		return Envelope{}, ErrPayload
	}
	from, p, ok := field(p)
	if !ok {
		return Envelope{}, ErrPayload
	}
	return Envelope{ID: string(id), From: string(from), Data: p}, nil
}

func field(p []byte) (val, rest []byte, ok bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

// CompactJSON returns data as one JSON value with no raw newline, which
// frames rely on: a WebSocket frame joins messages with "\n" and an SSE
// "data:" line ends at one. It returns false when data is not valid JSON.
func CompactJSON(data []byte) ([]byte, bool) {
	if !json.Valid(data) {
		return nil, false
	}
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') < 0 {
		return data, true
	}
	var b bytes.Buffer
	if err := json.Compact(&b, data); err != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// Frame is one server-to-client frame: a single-line JSON object shared,
// read-only, by every connection it is queued on.
type Frame struct {
	ID     string // message id; "" for control frames
	JSON   []byte
	Stored bool   // ID is a store position: the SSE "id:" field, a resume cursor
	Prev   uint64 // of a stored live message: the position of the room's previous one
	Born   int64  // when the fan-out built it (stats.Set.Now), for the delivery delay; 0 if not counted
}

// Kinds of message frames.
const (
	KindRoom = iota
	KindUser
	KindConn
)

// MessageFrame builds the frame for a delivered message. target is the room
// name for KindRoom and unused otherwise.
func MessageFrame(kind int, target string, e Envelope) *Frame {
	b := make([]byte, 0, 64+len(e.ID)+len(target)+len(e.From)+len(e.Data))
	if kind == KindRoom {
		b = append(b, `{"type":"message","id":`...)
		b = AppendString(b, e.ID)
		b = append(b, `,"room":`...)
		b = AppendString(b, target)
	} else {
		b = append(b, `{"type":"direct","id":`...)
		b = AppendString(b, e.ID)
		if kind == KindUser {
			b = append(b, `,"to":"user"`...)
		} else {
			b = append(b, `,"to":"conn"`...)
		}
	}
	if e.From != "" {
		b = append(b, `,"from":`...)
		b = AppendString(b, e.From)
	}
	b = append(b, `,"data":`...)
	b = append(b, e.Data...)
	b = append(b, '}')
	return &Frame{ID: e.ID, JSON: b}
}

// Control frames. Each takes the client's ref (raw JSON, may be nil).

// Protocol is the version of the client protocol (PROTOCOL.md) the
// server speaks, in every welcome frame.
const Protocol = 1

func Welcome(conn, user string) *Frame {
	b := strconv.AppendInt([]byte(`{"type":"welcome","protocol":`), Protocol, 10)
	b = append(append(b, `,"conn":`...), AppendString(nil, conn)...)
	if user != "" {
		b = append(b, `,"user":`...)
		b = AppendString(b, user)
	}
	return &Frame{JSON: append(b, '}')}
}

// Reply builds {"type":typ,"room":room,"id":id,"ref":ref}, omitting empty fields.
func Reply(typ, room, id string, ref json.RawMessage) *Frame {
	b := append([]byte(`{"type":`), AppendString(nil, typ)...)
	if room != "" {
		b = append(b, `,"room":`...)
		b = AppendString(b, room)
	}
	if id != "" {
		b = append(b, `,"id":`...)
		b = AppendString(b, id)
	}
	b = appendRef(b, ref)
	return &Frame{JSON: append(b, '}')}
}

// ServerMade builds {"type":typ,"room":room,"by":"server"}: a subscription
// the server made or ended, not an answer to the client's request.
func ServerMade(typ, room string) *Frame {
	b := append([]byte(`{"type":`), AppendString(nil, typ)...)
	b = append(b, `,"room":`...)
	b = AppendString(b, room)
	return &Frame{JSON: append(b, `,"by":"server"}`...)}
}

// InboxFrame is one inbox message: {"type":"inbox","id","time","data"}.
func InboxFrame(id string, data []byte, at time.Time) *Frame {
	b := append([]byte(`{"type":"inbox","id":`), AppendString(nil, id)...)
	b = append(b, `,"time":`...)
	b = AppendString(b, at.UTC().Format(time.RFC3339Nano))
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return &Frame{JSON: append(b, '}')}
}

// CallReply answers a call: {"type":"reply","ref":ref,"data":data}.
func CallReply(data []byte, ref json.RawMessage) *Frame {
	b := appendRef([]byte(`{"type":"reply"`), ref)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return &Frame{JSON: append(b, '}')}
}

// Refresh asks the client to refresh its session before expires (Unix
// milliseconds).
func Refresh(expires int64) *Frame {
	b := append([]byte(`{"type":"refresh","expires":`), strconv.FormatInt(expires, 10)...)
	return &Frame{JSON: append(b, '}')}
}

// Error builds an error frame.
func Error(code, message, room string, ref json.RawMessage) *Frame {
	b := append([]byte(`{"type":"error","code":`), AppendString(nil, code)...)
	b = append(b, `,"message":`...)
	b = AppendString(b, message)
	if room != "" {
		b = append(b, `,"room":`...)
		b = AppendString(b, room)
	}
	b = appendRef(b, ref)
	return &Frame{JSON: append(b, '}')}
}

// Close builds the frame an SSE stream ends with, carrying what a WebSocket
// close frame would.
func Close(code int, reason string) *Frame {
	b := append([]byte(`{"type":"close","code":`), strconv.Itoa(code)...)
	b = append(b, `,"reason":`...)
	b = AppendString(b, reason)
	return &Frame{JSON: append(b, '}')}
}

func appendRef(b []byte, ref json.RawMessage) []byte {
	if len(ref) == 0 {
		return b
	}
	return append(append(b, `,"ref":`...), ref...)
}

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but line terminators to some JavaScript parsers.
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// ClientFrame is a frame sent by a WebSocket client.
type ClientFrame struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	Data json.RawMessage `json:"data"`
	Ref  json.RawMessage `json:"ref"`
	// LastID is the id of the last message of Room the client has, for a
	// server with history to resume from. Without history it is ignored.
	LastID string `json:"last_id"`
	Limit  int    `json:"limit"` // of a history or presence request
	After  string `json:"after"` // of a presence request: the page cursor
	// Presence asks a subscribe for the room's join and leave events.
	Presence bool `json:"presence"`
	// Key is a publish's idempotency key: 1 to MaxKeyLen printable bytes.
	Key string `json:"key"`
	// Method and Timeout (milliseconds) of a call.
	Method  string `json:"method"`
	Timeout int64  `json:"timeout"`
	// Conn names the connection a frame POSTed to the mount path acts on.
	Conn string `json:"conn"`
	// ID of an "ack": the inbox message acknowledged, with all before it.
	ID string `json:"id"`
}

// MaxKeyLen bounds a publish's idempotency key.
const MaxKeyLen = 64

// Stored is a stored message in a history frame.
type Stored struct {
	ID   string
	From string
	Data []byte
	Time time.Time
}

// HistoryFrame answers a history request with the room's stored messages,
// oldest first.
func HistoryFrame(room string, msgs []Stored, ref json.RawMessage) *Frame {
	b := append([]byte(`{"type":"history","room":`), AppendString(nil, room)...)
	b = appendRef(b, ref)
	b = append(b, `,"messages":[`...)
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = AppendString(b, m.ID)
		if m.From != "" {
			b = append(b, `,"from":`...)
			b = AppendString(b, m.From)
		}
		b = append(b, `,"time":`...)
		b = AppendString(b, m.Time.UTC().Format(time.RFC3339Nano))
		b = append(b, `,"data":`...)
		b = append(b, m.Data...)
		b = append(b, '}')
	}
	return &Frame{JSON: append(b, "]}"...)}
}

// PresenceEvent is one user joining (their first connection in the room,
// on any instance) or leaving (their last one); Count is the room's number
// of users after it.
type PresenceEvent struct {
	Join  bool
	User  string
	Count int
}

// PresenceEventFrame builds {"type":"join"|"leave","room":…,"user":…,"count":…}.
func PresenceEventFrame(room string, e PresenceEvent) *Frame {
	b := []byte(`{"type":"leave","room":`)
	if e.Join {
		b = []byte(`{"type":"join","room":`)
	}
	b = AppendString(b, room)
	b = append(b, `,"user":`...)
	b = AppendString(b, e.User)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(e.Count), 10)
	return &Frame{JSON: append(b, '}')}
}

// PresencePage is a room's counts and one page of its members.
type PresencePage struct {
	Count, Conns int
	Members      []Member
	Next         string
}

// Member is a user in a room and the number of their connections there.
type Member struct {
	User  string
	Conns int
}

// PresenceFrame builds {"type":"presence","room":…,"count":…,"conns":…,
// "members":[{"user":…,"conns":…}],"next":…}, "next" only when there is a
// further page.
func PresenceFrame(room string, p PresencePage, ref json.RawMessage) *Frame {
	b := append([]byte(`{"type":"presence","room":`), AppendString(nil, room)...)
	b = appendRef(b, ref)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(p.Count), 10)
	b = append(b, `,"conns":`...)
	b = strconv.AppendInt(b, int64(p.Conns), 10)
	if p.Next != "" {
		b = append(b, `,"next":`...)
		b = AppendString(b, p.Next)
	}
	b = append(b, `,"members":[`...)
	for i, m := range p.Members {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"user":`...)
		b = AppendString(b, m.User)
		b = append(b, `,"conns":`...)
		b = strconv.AppendInt(b, int64(m.Conns), 10)
		b = append(b, '}')
	}
	return &Frame{JSON: append(b, "]}"...)}
}

// MaxRefLen bounds the client's correlation token, which is echoed back.
const MaxRefLen = 64

// ParseClientFrame decodes one client frame. A ref that is not a short string
// or number is dropped and reported, so it is never echoed back malformed.
func ParseClientFrame(p []byte) (ClientFrame, error) {
	var f ClientFrame
	if err := json.Unmarshal(p, &f); err != nil {
		return ClientFrame{}, errors.New("frame is not a JSON object")
	}
	if len(f.Ref) > 0 {
		if len(f.Ref) > MaxRefLen || !(f.Ref[0] == '"' || f.Ref[0] == '-' || f.Ref[0] >= '0' && f.Ref[0] <= '9') {
			f.Ref = nil
			return f, errors.New(`"ref" must be a string or number of at most 64 bytes`)
		}
	}
	if f.Type == "" {
		return f, errors.New(`frame has no "type"`)
	}
	if f.Key != "" && !ValidKey(f.Key) {
		return f, errors.New(`"key" must be 1 to 64 printable characters without spaces`)
	}
	return f, nil
}

// ValidKey reports whether key is a usable idempotency key: 1 to MaxKeyLen
// bytes of printable UTF-8 without whitespace.
func ValidKey(key string) bool {
	if key == "" || len(key) > MaxKeyLen || !utf8.ValidString(key) {
		return false
	}
	for _, r := range key {
		if r <= ' ' || r == 0x7f || r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
