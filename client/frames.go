package client

import (
	"encoding/json"
	"strconv"
	"time"
)

// Message is a message the connection received: in a room (Room is set), or
// for this user or this connection only (To is "user" or "conn").
type Message struct {
	ID   string          // opaque; in a room with history, its store position
	Room string          // "" for a direct message
	To   string          // "user" or "conn" for a direct message
	From string          // the publishing client's user id, set by the server; "" from server code
	Data json.RawMessage // the publisher's JSON value
	Time time.Time       // when stored: set in History results only
}

// InboxMessage is a message kept in the user's inbox (PROTOCOL.md §12).
type InboxMessage struct {
	ID   string
	Time time.Time
	Data json.RawMessage
}

// Presence is who is in a room, on every instance (PROTOCOL.md §9).
type Presence struct {
	Room    string   `json:"room"`
	Count   int      `json:"count"`          // users
	Conns   int      `json:"conns"`          // connections
	Members []Member `json:"members"`        // one page, ordered by user id
	Next    string   `json:"next,omitempty"` // the cursor for the following page ("" when none)
}

// Member is a user in a room and how many connections they have in it.
type Member struct {
	User  string `json:"user"`
	Conns int    `json:"conns"`
}

// PresenceEvent is what a subscription made WithPresence learns: a fresh
// snapshot (Type "presence": replace what you had), or one user's first
// connection entering ("join") or last one leaving ("leave").
type PresenceEvent struct {
	Type     string    `json:"type"`
	Room     string    `json:"room"`
	User     string    `json:"user,omitempty"`     // join, leave
	Count    int       `json:"count"`              // users in the room after it
	Snapshot *Presence `json:"snapshot,omitempty"` // presence
}

// frame is any server frame (PROTOCOL.md §4), decoded loosely.
type frame struct {
	Type     string          `json:"type"`
	Protocol int             `json:"protocol"`
	Conn     string          `json:"conn"`
	User     string          `json:"user"`
	Room     string          `json:"room"`
	Ref      json.RawMessage `json:"ref"`
	By       string          `json:"by"`
	ID       string          `json:"id"`
	From     string          `json:"from"`
	To       string          `json:"to"`
	Data     json.RawMessage `json:"data"`
	Code     json.RawMessage `json:"code"` // a string in errors, a number in close
	Message  string          `json:"message"`
	Reason   string          `json:"reason"`
	Expires  int64           `json:"expires"`
	Time     time.Time       `json:"time"`
	Messages []struct {
		ID   string          `json:"id"`
		From string          `json:"from"`
		Time time.Time       `json:"time"`
		Data json.RawMessage `json:"data"`
	} `json:"messages"`
	Count   int      `json:"count"`
	Conns   int      `json:"conns"`
	Members []Member `json:"members"`
	Next    string   `json:"next"`
}

func (f *frame) code() string {
	var s string
	if json.Unmarshal(f.Code, &s) == nil {
		return s
	}
	return string(f.Code)
}

func (f *frame) closeCode() int {
	n, _ := strconv.Atoi(string(f.Code))
	return n
}

func (f *frame) err() *Error { return &Error{Code: f.code(), Message: f.Message, Room: f.Room} }

func (f *frame) message() Message {
	return Message{ID: f.ID, Room: f.Room, To: f.To, From: f.From, Data: f.Data}
}

func (f *frame) presence() *Presence {
	return &Presence{Room: f.Room, Count: f.Count, Conns: f.Conns, Members: f.Members, Next: f.Next}
}

// out is a client frame (PROTOCOL.md §5).
type out struct {
	Type     string          `json:"type"`
	Room     string          `json:"room,omitempty"`
	LastID   string          `json:"last_id,omitempty"`
	Presence bool            `json:"presence,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	Key      string          `json:"key,omitempty"`
	Limit    int             `json:"limit,omitempty"`
	After    string          `json:"after,omitempty"`
	Method   string          `json:"method,omitempty"`
	Timeout  int64           `json:"timeout,omitempty"`
	ID       string          `json:"id,omitempty"`
	Ref      int64           `json:"ref,omitempty"`
	Conn     string          `json:"conn,omitempty"` // POSTed over SSE
}

// encodeData turns what a caller passes as data into one JSON value:
// json.RawMessage and []byte are taken as JSON already, anything else is
// marshalled.
func encodeData(v any) (json.RawMessage, error) {
	switch d := v.(type) {
	case json.RawMessage:
		if !json.Valid(d) {
			return nil, &Error{Code: "bad_request", Message: "data is not valid JSON"}
		}
		return d, nil
	case []byte:
		if !json.Valid(d) {
			return nil, &Error{Code: "bad_request", Message: "data is not valid JSON"}
		}
		return d, nil
	}
	return json.Marshal(v)
}
