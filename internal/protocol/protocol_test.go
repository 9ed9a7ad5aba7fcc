package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/wire"
)

// session records the operations it is asked for and the replies, and
// refuses with err when set.
type session struct {
	calls   []string
	replies []string
	err     error
	accept  bool // Send: the endpoint takes messages
}

func (s *session) Reply(f *wire.Frame) { s.replies = append(s.replies, string(f.JSON)) }
func (s *session) Subscribe(room, lastID string, presence bool, ref json.RawMessage) error {
	s.calls = append(s.calls, fmt.Sprintf("subscribe %s %q %v", room, lastID, presence))
	return s.err
}
func (s *session) Unsubscribe(room string, ref json.RawMessage) error {
	s.calls = append(s.calls, "unsubscribe "+room)
	return s.err
}
func (s *session) Publish(room, key string, data []byte) (string, error) {
	s.calls = append(s.calls, "publish "+room+" "+string(data))
	return "7", s.err
}
func (s *session) History(room string, limit int) ([]wire.Stored, error) {
	s.calls = append(s.calls, fmt.Sprintf("history %s %d", room, limit))
	return nil, s.err
}
func (s *session) Presence(room, after string, limit int) (wire.PresencePage, error) {
	s.calls = append(s.calls, fmt.Sprintf("presence %s %q %d", room, after, limit))
	return wire.PresencePage{}, s.err
}
func (s *session) Call(method string, data []byte, timeout time.Duration, ref json.RawMessage) error {
	s.calls = append(s.calls, fmt.Sprintf("call %s %s %v", method, data, timeout))
	return s.err
}
func (s *session) Ack(id string) error {
	s.calls = append(s.calls, "ack "+id)
	return s.err
}
func (s *session) Send(data []byte) (bool, bool) {
	s.calls = append(s.calls, "send "+string(data))
	return s.accept, true
}

// coded is an error carrying a client code, as the broker's are.
type coded struct{ code string }

func (e coded) Error() string        { return "pubsub: the host's secret reason" }
func (e coded) ProtocolCode() string { return e.code }

func TestFrames(t *testing.T) {
	for _, tc := range []struct {
		name, frame string
		err         error
		accept      bool
		calls       string // the operations called, ";"-joined
		reply       string // the replies, "\n"-joined
	}{
		{"subscribe", `{"type":"subscribe","room":"lobby","last_id":"12","presence":true,"ref":1}`, nil, false,
			`subscribe lobby "12" true`, ``},
		{"publish answers with the id when it has a ref", `{"type":"publish","room":"lobby","data":{"a":1},"ref":"p"}`, nil, false,
			`publish lobby {"a":1}`, `{"type":"published","room":"lobby","id":"7","ref":"p"}`},
		{"publish without a ref is not answered", `{"type":"publish","room":"lobby","data":1}`, nil, false, `publish lobby 1`, ``},
		{"publish needs data", `{"type":"publish","room":"lobby"}`, nil, false,
			``, `{"type":"error","code":"bad_request","message":"\"data\" must be a JSON value","room":"lobby"}`},
		{"history has a default limit", `{"type":"history","room":"lobby"}`, nil, false, `history lobby 50`, `{"type":"history","room":"lobby","messages":[]}`},
		{"history limit bounds", `{"type":"history","room":"lobby","limit":101,"ref":2}`, nil, false,
			``, `{"type":"error","code":"bad_request","message":"\"limit\" must be 0 to 100","room":"lobby","ref":2}`},
		{"presence", `{"type":"presence","room":"lobby","after":"bob","limit":5}`, nil, false, `presence lobby "bob" 5`, `{"type":"presence","room":"lobby","count":0,"conns":0,"members":[]}`},
		{"an invalid room is refused before any operation", `{"type":"subscribe","room":"a.b","ref":3}`, nil, false,
			``, `{"type":"error","code":"invalid_room","message":"invalid room name: contains a space, a control character, \".\", \"*\" or \">\"","room":"a.b","ref":3}`},
		{"forbidden says what, not why", `{"type":"subscribe","room":"admin","ref":4}`, coded{Forbidden}, false,
			`subscribe admin "" false`, `{"type":"error","code":"forbidden","message":"not allowed to subscribe to this room","room":"admin","ref":4}`},
		{"an internal error never leaks its text", `{"type":"history","room":"lobby"}`, errors.New("nats: connection closed at 10.0.0.7"), false,
			`history lobby 50`, `{"type":"error","code":"internal","message":"history failed","room":"lobby"}`},
		{"a refusal carries its own text", `{"type":"publish","room":"r","data":1}`, &Refusal{Code: Forbidden, Message: "client publish is disabled"}, false,
			`publish r 1`, `{"type":"error","code":"forbidden","message":"client publish is disabled","room":"r"}`},
		{"send to an endpoint that takes none", `{"type":"send","data":{"x":1}}`, nil, false,
			`send {"x":1}`, `{"type":"error","code":"unsupported","message":"this endpoint takes no send frames"}`},
		{"send", `{"type":"send","data":{"x":1}}`, nil, true, `send {"x":1}`, ``},
		{"ping", `{"type":"ping","ref":"p"}`, nil, false, ``, `{"type":"pong","ref":"p"}`},
		{"call", `{"type":"call","method":"m","data":{ "a" : 1 },"timeout":250,"ref":5}`, nil, false, `call m { "a" : 1 } 250ms`, ``},
		{"call without data or timeout", `{"type":"call","method":"m"}`, nil, false, `call m  0s`, ``},
		{"call of no handler", `{"type":"call","method":"m","ref":6}`, &Refusal{Code: NoHandler, Message: "no handler for method \"m\""}, false,
			`call m  0s`, `{"type":"error","code":"no_handler","message":"no handler for method \"m\"","ref":6}`},
		{"call needs a method", `{"type":"call","ref":7}`, nil, false,
			``, `{"type":"error","code":"bad_request","message":"\"method\" must be 1 to 64 printable characters without spaces","ref":7}`},
		{"call method with a control character", "{\"type\":\"call\",\"method\":\"a\\u0007\"}", nil, false,
			``, `{"type":"error","code":"bad_request","message":"\"method\" must be 1 to 64 printable characters without spaces"}`},
		{"ack answers when it has a ref", `{"type":"ack","id":"12","ref":8}`, nil, false, `ack 12`, `{"type":"acked","id":"12","ref":8}`},
		{"ack without a ref", `{"type":"ack","id":"12"}`, nil, false, `ack 12`, ``},
		{"unknown", `{"type":"nope"}`, nil, false, ``, `{"type":"error","code":"bad_request","message":"unknown frame type"}`},
		{"not JSON", `{"type":`, nil, false, ``, `{"type":"error","code":"bad_request","message":"frame is not a JSON object"}`},
		{"a hostile ref is dropped, not echoed", `{"type":"ping","ref":{"a":1}}`, nil, false,
			``, `{"type":"error","code":"bad_request","message":"\"ref\" must be a string or number of at most 64 bytes"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &session{err: tc.err, accept: tc.accept}
			if !Handle(s, []byte(tc.frame)) {
				t.Fatal("Handle ended the connection")
			}
			if got := strings.Join(s.calls, ";"); got != tc.calls {
				t.Errorf("calls %q, want %q", got, tc.calls)
			}
			if got := strings.Join(s.replies, "\n"); got != tc.reply {
				t.Errorf("replies\n%s\nwant\n%s", got, tc.reply)
			}
		})
	}
}

func TestCode(t *testing.T) {
	if c := Code(fmt.Errorf("wrapped: %w", coded{NoHistory})); c != NoHistory {
		t.Fatalf("wrapped coded error: %s", c)
	}
	if c := Code(errors.New("x")); c != Internal {
		t.Fatalf("plain error: %s", c)
	}
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	got := Truncate(long)
	if !strings.HasSuffix(got, "…") || len(got) > 64+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Fatalf("Truncate = %q", got)
	}
	if Truncate("short") != "short" {
		t.Fatal("short names change")
	}
}
