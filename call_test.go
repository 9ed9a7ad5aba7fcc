package pubsub_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// callBroker answers the methods the tests call.
func callBroker(t *testing.T, opts ...Option) (*Broker, *atomic.Int32) {
	running := new(atomic.Int32)
	b := newBroker(t, append([]Option{
		WithCall("echo", func(ctx context.Context, c Call) ([]byte, error) {
			role, _ := ctx.Value(roleKey{}).(string) // the host middleware's value
			out, _ := json.Marshal(map[string]any{"method": c.Method, "user": c.Conn.User(), "role": role, "data": c.Data})
			return out, nil
		}),
		WithCall("refuse", func(context.Context, Call) ([]byte, error) {
			return nil, &CallError{Code: "invalid", Message: "text too long"}
		}),
		WithCall("fail", func(context.Context, Call) ([]byte, error) {
			return nil, errors.New("db password is hunter2")
		}),
		WithCall("panic", func(context.Context, Call) ([]byte, error) { panic("oops") }),
		WithCall("slow", func(ctx context.Context, _ Call) ([]byte, error) {
			running.Add(1)
			defer running.Add(-1)
			<-ctx.Done()
			return []byte(`"late"`), nil
		}),
		WithCall("nothing", func(context.Context, Call) ([]byte, error) { return nil, nil }),
		WithCall("not_json", func(context.Context, Call) ([]byte, error) { return []byte("{oops"), nil }),
	}, opts...)...)
	return b, running
}

// answerTo reads c until the answer to ref: a reply or an error.
func answerTo(t *testing.T, c client, ref int) testkit.Frame {
	t.Helper()
	want := []byte(strings.TrimSpace(string(must(json.Marshal(ref)))))
	for {
		f := testkit.Next(t, c)
		if (f.Type == "reply" || f.Type == "error") && string(f.Ref) == string(want) {
			return f
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestCallOverWebSocket(t *testing.T) {
	b, _ := callBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "alice", role: "editor"})
	for i, tc := range []struct {
		frame      map[string]any
		typ, code  string
		data, text string
	}{
		{map[string]any{"method": "echo", "data": map[string]int{"n": 1}}, "reply", "", `{"data":{"n":1},"method":"echo","role":"editor","user":"alice"}`, ""},
		{map[string]any{"method": "echo"}, "reply", "", `{"data":null,"method":"echo","role":"editor","user":"alice"}`, ""},
		{map[string]any{"method": "nothing"}, "reply", "", `null`, ""},
		{map[string]any{"method": "refuse"}, "error", "invalid", "", "text too long"},
		{map[string]any{"method": "fail"}, "error", "internal", "", "the call failed"},
		{map[string]any{"method": "panic"}, "error", "internal", "", "the call failed"},
		{map[string]any{"method": "not_json"}, "error", "internal", "", "the call failed"},
		{map[string]any{"method": "missing"}, "error", "no_handler", "", `no handler for method "missing"`},
		{map[string]any{"method": "slow", "timeout": 100}, "error", "timeout", "", "the call was not answered in time"},
		{map[string]any{"method": ""}, "error", "bad_request", "", ""},
		{map[string]any{"method": "a b"}, "error", "bad_request", "", ""},
		{map[string]any{"method": "echo", "timeout": -1}, "error", "bad_request", "", ""},
	} {
		tc.frame["type"], tc.frame["ref"] = "call", i
		c.send(t, tc.frame)
		f := answerTo(t, c, i)
		if f.Type != tc.typ || (tc.code != "" && f.ErrorCode() != tc.code) || (tc.data != "" && string(f.Data) != tc.data) ||
			(tc.text != "" && f.Message != tc.text) || strings.Contains(f.Message, "hunter2") {
			t.Errorf("call %v: got %+v (data %s)", tc.frame, f, f.Data)
		}
	}
}

// Calls run beside the connection's reading: a slow one holds neither
// pings nor other calls, and a connection has at most so many at once.
func TestCallLimitsAndConcurrency(t *testing.T) {
	b, running := callBroker(t, WithCallLimits(2, time.Second))
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	c.send(t, map[string]any{"type": "call", "method": "slow", "ref": 1, "timeout": 60000}) // capped at 1 s
	c.send(t, map[string]any{"type": "call", "method": "slow", "ref": 2})
	eventually(t, "two calls running", func() bool { return running.Load() == 2 })
	c.send(t, map[string]any{"type": "call", "method": "echo", "ref": 3})
	c.send(t, map[string]any{"type": "ping", "ref": 4})
	if f := testkit.Next(t, c); f.Type != "error" || f.ErrorCode() != "too_many_calls" || string(f.Ref) != "3" {
		t.Fatalf("third call: %+v", f)
	}
	if f := testkit.Next(t, c); f.Type != "pong" {
		t.Fatalf("ping behind slow calls: %+v", f)
	}
	start := time.Now()
	answers := map[string]string{} // in either order
	for len(answers) < 2 {
		if f := testkit.Next(t, c); f.Type == "error" {
			answers[string(f.Ref)] = f.ErrorCode()
		}
	}
	if answers["1"] != "timeout" || answers["2"] != "timeout" {
		t.Fatalf("slow calls: %v", answers)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the server's limit of 1 s took %v", took)
	}
	c.send(t, map[string]any{"type": "call", "method": "echo", "ref": 5})
	if f := answerTo(t, c, 5); f.Type != "reply" {
		t.Fatalf("after the slow ones: %+v", f)
	}
}

// A handler that ignores its context still gets its caller a timeout at
// the deadline, and does not hold the connection's end.
func TestCallHandlerIgnoringItsContext(t *testing.T) {
	release := make(chan struct{})
	b := newBroker(t, WithCall("stuck", func(context.Context, Call) ([]byte, error) {
		<-release // ignores ctx
		return nil, nil
	}), WithCallLimits(4, 200*time.Millisecond))
	defer close(release)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	c.send(t, map[string]any{"type": "call", "method": "stuck", "ref": 1})
	start := time.Now()
	if f := answerTo(t, c, 1); f.ErrorCode() != "timeout" || time.Since(start) > 2*time.Second {
		t.Fatalf("got %+v after %v", f, time.Since(start))
	}
	c.Cut()
	eventually(t, "the connection ended", func() bool { return b.Stats().WebSocketConns == 0 })
}

// A connection that closes with calls under way waits for them; nothing
// is left running (goleak checks the package).
func TestCallEndsWithItsConnection(t *testing.T) {
	b, running := callBroker(t)
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	c.send(t, map[string]any{"type": "call", "method": "slow", "ref": 1})
	eventually(t, "the call running", func() bool { return running.Load() == 1 })
	c.Cut()
	eventually(t, "the call ended with its connection", func() bool { return running.Load() == 0 && b.Stats().WebSocketConns == 0 })
}

// postFrame POSTs a client frame for connection conn as user, as the
// browser client does over SSE.
func postFrame(t *testing.T, url, user string, frame map[string]any) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(must(json.Marshal(frame)))))
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.Header.Set("X-User", user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}
