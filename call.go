package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/roomcast/pubsub/internal/protocol"
	"github.com/roomcast/pubsub/internal/wire"
)

// Call is a client's request for an answer: live.call(method, data) in the
// browser, a "call" frame on any transport (PROTOCOL.md §5).
type Call struct {
	Method string
	// Data is the client's JSON value ("null" when it sent none).
	Data json.RawMessage
	// Conn is the asking connection, on this instance: Conn.User() is who
	// asks, Conn.Context() holds every value the host's middleware stored.
	Conn *Conn
}

// CallHandler answers a call with a JSON value (nil: null) or an error.
// ctx is the connection's context, ending at the call's timeout or when the
// connection closes: a handler must return when it ends. An error reaches
// the client as its code and message only if it is (or wraps) a
// *CallError; any other error is "internal" to the client (its text stays
// in the server's log), and so is a panic.
type CallHandler func(ctx context.Context, call Call) (reply []byte, err error)

// CallError is an error a CallHandler returns for the client to read:
// Code is 1 to 32 characters of [a-z0-9_] (e.g. "invalid", "not_found"),
// Message a short text for people (UTF-8, at most 1 KiB). Avoid the
// library's own codes (PROTOCOL.md §6: "timeout", "internal"…), which a
// client could not tell apart.
type CallError struct{ Code, Message string }

func (e *CallError) Error() string { return e.Code + ": " + e.Message }

// WithCall registers h for the calls of method; method "*" answers every
// method without a handler of its own. A call of a method nobody answers is
// refused with "no_handler".
func WithCall(method string, h CallHandler) Option {
	return func(c *config) {
		if c.calls == nil {
			c.calls = map[string]CallHandler{}
		}
		c.calls[method] = h
	}
}

// WithCallLimits bounds calls: at most inFlight unanswered calls per
// connection (one more is refused with "too_many_calls"), each answered
// within maxTimeout (a client may ask for less; then "timeout").
// Default 16 and 10 s.
func WithCallLimits(inFlight int, maxTimeout time.Duration) Option {
	return func(c *config) { c.callsInFlight, c.callTimeout = inFlight, maxTimeout }
}

// Defaults of WithCallLimits.
const (
	DefaultCallsInFlight = 16
	DefaultCallTimeout   = 10 * time.Second
)

// callState is a connection's calls: how many are being answered, and the
// context their handlers get, which ends when the connection starts
// closing (the connection waits for them before it ends).
type callState struct {
	inFlight atomic.Int32
	ctx      context.Context
	end      context.CancelFunc
}

func (s *callState) init(ctx context.Context) { s.ctx, s.end = context.WithCancel(ctx) }

// call starts answering a call in a goroutine the connection owns (it
// waits for it when it ends) and returns at once: a slow handler must not
// hold the connection's reading.
func (s session) Call(method string, data []byte, timeout time.Duration, ref json.RawMessage) error {
	c := s.c
	h := c.b.cfg.calls[method]
	if h == nil {
		h = c.b.cfg.calls["*"]
	}
	if h == nil {
		return &protocol.Refusal{Code: protocol.NoHandler, Message: fmt.Sprintf("no handler for method %q", protocol.Truncate(method))}
	}
	if timeout <= 0 || timeout > c.b.cfg.callTimeout {
		timeout = c.b.cfg.callTimeout
	}
	if c.calls.inFlight.Add(1) > int32(c.b.cfg.callsInFlight) {
		c.calls.inFlight.Add(-1)
		return &protocol.Refusal{Code: protocol.TooManyCalls, Message: fmt.Sprintf("at most %d calls at once", c.b.cfg.callsInFlight)}
	}
	if !c.busy() { // closing: nothing would carry the answer
		c.calls.inFlight.Add(-1)
		return nil
	}
	if len(data) == 0 {
		data = []byte("null")
	}
	// The connection waits for the answer, which comes by the deadline
	// even if the handler ignores its context; the handler's goroutine is
	// the broker's (Shutdown waits for it, within its own deadline).
	ctx, cancel := context.WithTimeout(c.calls.ctx, timeout)
	done := make(chan callResult, 1)
	c.b.handlers.start(method, func() {
		reply, err := runCall(ctx, h, Call{Method: method, Data: data, Conn: c})
		done <- callResult{reply, err}
	})
	go func() {
		defer c.bg.Done()
		defer c.calls.inFlight.Add(-1)
		defer cancel()
		var r callResult
		select {
		case r = <-done:
		case <-ctx.Done():
		}
		c.reply(c.callAnswer(ctx, method, r.reply, r.err, ref))
	}()
	return nil
}

type callResult struct {
	reply []byte
	err   error
}

// callHandlers are the call handlers running on this instance.
type callHandlers struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	methods map[string]int
}

func (h *callHandlers) start(method string, run func()) {
	h.mu.Lock()
	if h.methods == nil {
		h.methods = map[string]int{}
	}
	h.methods[method]++
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer func() {
			h.mu.Lock()
			if h.methods[method]--; h.methods[method] == 0 {
				delete(h.methods, method)
			}
			h.mu.Unlock()
			h.wg.Done()
		}()
		run()
	}()
}

func (h *callHandlers) Wait() { h.wg.Wait() }

// running names the methods whose handlers are running.
func (h *callHandlers) running() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for m := range h.methods {
		out = append(out, m)
	}
	return out
}

// runCall calls h, turning a panic into an error.
func runCall(ctx context.Context, h CallHandler, call Call) (reply []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("pubsub: the handler of %q panicked: %v", call.Method, p)
		}
	}()
	return h(ctx, call)
}

// callAnswer is the frame that answers a call: its reply, or an error the
// client may read.
func (c *Conn) callAnswer(ctx context.Context, method string, reply []byte, err error, ref json.RawMessage) *wire.Frame {
	var ce *CallError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return wire.Error(protocol.Timeout, "the call was not answered in time", "", ref)
	case errors.As(err, &ce) && validCallCode(ce.Code) && utf8.ValidString(ce.Message) && len(ce.Message) <= 1024:
		return wire.Error(ce.Code, ce.Message, "", ref)
	case ce != nil:
		c.b.log.Error("pubsub: a call handler's CallError is not one a client may read (code: 1 to 32 of [a-z0-9_]; message: UTF-8, at most 1 KiB); sent as internal",
			"method", method, "code", protocol.Truncate(ce.Code))
		return wire.Error(protocol.Internal, "the call failed", "", ref)
	case err != nil:
		c.b.log.Error("pubsub: a call failed", "method", method, "user", c.user, "conn", c.id, "err", err)
		return wire.Error(protocol.Internal, "the call failed", "", ref)
	}
	if len(reply) == 0 {
		reply = []byte("null")
	}
	data, ok := wire.CompactJSON(reply)
	if !ok || len(data) > c.b.cfg.maxMessage {
		c.b.log.Error("pubsub: a call handler answered what is not a JSON value within the maximum message size", "method", method, "bytes", len(reply))
		return wire.Error(protocol.Internal, "the call failed", "", ref)
	}
	return wire.CallReply(data, ref)
}

func validCallCode(code string) bool {
	if code == "" || len(code) > 32 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if ch := code[i]; !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_') {
			return false
		}
	}
	return true
}
