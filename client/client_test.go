package client_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/client"
)

// The Go client against a real broker (embedded NATS) over real loopback
// sockets, on both transports.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

var transports = []struct {
	name string
	t    client.Transport
}{{"websocket", client.WebSocket}, {"sse", client.SSE}}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// server is a host app: its middleware takes the user from X-User (as a
// session cookie would give it) and refuses requests without one when
// login is required.
type server struct {
	*pubsub.Broker
	URL string
}

func newServer(t *testing.T, opts ...pubsub.Option) *server {
	t.Helper()
	b, err := pubsub.New(append([]pubsub.Option{pubsub.WithLogger(quiet())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u := r.Header.Get("X-User")
			if u == "" {
				http.Error(w, "log in", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(pubsub.ContextWithUser(r.Context(), u)))
		})
	}
	mux.Handle("/live", auth(b.Handler()))
	mux.Handle("/open", b.Handler()) // anonymous
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = b.Close()
	})
	return &server{b, srv.URL}
}

func dial(t *testing.T, url, user string, tr client.Transport, o *client.Options) *client.Client {
	t.Helper()
	if o == nil {
		o = &client.Options{}
	}
	o.Transport, o.Logger = tr, quiet()
	if user != "" {
		o.Header = http.Header{"X-User": {user}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := client.Dial(ctx, url, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func text(s string) []byte { p, _ := json.Marshal(map[string]string{"text": s}); return p }

func textOf(m client.Message) string {
	var d struct{ Text string }
	_ = json.Unmarshal(m.Data, &d)
	return d.Text
}

// next returns the next message of it, failing on an error or after wait.
func next(t *testing.T, it func() (client.Message, error, bool)) client.Message {
	t.Helper()
	m, err, ok := it()
	if !ok || err != nil {
		t.Fatalf("next message: %v (ended: %v)", err, !ok)
	}
	return m
}

// pull turns a subscription's messages into a function returning one at a time.
func pull(t *testing.T, seq iter.Seq2[client.Message, error]) func() (client.Message, error, bool) {
	next, stop := iter.Pull2(seq)
	t.Cleanup(stop)
	return next
}

// textsUntil reads messages up to the marker text and returns the texts
// before it: what is not there was not delivered.
func textsUntil(t *testing.T, it func() (client.Message, error, bool), marker string) []string {
	t.Helper()
	var got []string
	for {
		m := next(t, it)
		if textOf(m) == marker {
			return got
		}
		got = append(got, textOf(m))
	}
}

func TestSubscribeAndPublish(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t, pubsub.WithClientPublish(func(ctx context.Context, user, room string) error {
				if room == "lobby" {
					return nil
				}
				return errors.New("no")
			}))
			alice := dial(t, s.URL+"/live", "alice", tr.t, nil)
			if alice.User() != "alice" || alice.Conn() == "" || alice.Transport().String() != tr.name {
				t.Fatalf("user %q conn %q transport %q", alice.User(), alice.Conn(), alice.Transport())
			}
			ctx := ctxT(t)
			lobby, err := alice.Subscribe(ctx, "lobby")
			if err != nil {
				t.Fatal(err)
			}
			msgs := pull(t, lobby.Messages(ctx))
			other := dial(t, s.URL+"/live", "bob", tr.t, nil)
			for i := range 3 {
				if err := s.Publish(ctx, "lobby", text(fmt.Sprint("m", i))); err != nil {
					t.Fatal(err)
				}
				_ = s.Publish(ctx, "news", text("not for alice"))
			}
			id, err := other.Publish(ctx, "lobby", map[string]string{"text": "from bob"})
			if err != nil || id == "" {
				t.Fatalf("Publish: %q %v", id, err)
			}
			_ = s.Publish(ctx, "lobby", text("end"))
			var from string
			got := []string{}
			for {
				m := next(t, msgs)
				if textOf(m) == "end" {
					break
				}
				if m.Room != "lobby" {
					t.Fatalf("message of room %q", m.Room)
				}
				if textOf(m) == "from bob" {
					from = m.From
					if m.ID != id {
						t.Errorf("bob's message has id %q, Publish returned %q", m.ID, id)
					}
				}
				got = append(got, textOf(m))
			}
			if want := []string{"m0", "m1", "m2", "from bob"}; !slices.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			if from != "bob" {
				t.Fatalf("from %q", from)
			}
			// A refused publish is an *Error with the key to retry with.
			_, err = other.Publish(ctx, "news", text("x"))
			var e *client.Error
			if !errors.Is(err, client.ErrForbidden) || !errors.As(err, &e) || e.Key == "" || e.Room != "news" {
				t.Fatalf("publish to news: %v", err)
			}
			// A refused subscription.
			if _, err := alice.Subscribe(ctx, "a.b"); !errors.Is(err, client.ErrInvalidRoom) {
				t.Fatalf("subscribe a.b: %v", err)
			}
		})
	}
}

// Direct messages, to the user and to the connection, on Client.Messages.
func TestDirectMessages(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t)
			a1 := dial(t, s.URL+"/live", "alice", tr.t, nil)
			a2 := dial(t, s.URL+"/live", "alice", tr.t, nil)
			ctx := ctxT(t)
			if err := s.SendToUser(ctx, "alice", text("both")); err != nil {
				t.Fatal(err)
			}
			if err := s.SendToConn(ctx, a1.Conn(), text("one")); err != nil {
				t.Fatal(err)
			}
			_ = s.SendToUser(ctx, "bob", text("not alice's"))
			_ = s.SendToUser(ctx, "alice", text("end"))
			got1 := textsUntil(t, pull(t, a1.Messages(ctx)), "end")
			got2 := textsUntil(t, pull(t, a2.Messages(ctx)), "end")
			if !slices.Equal(got1, []string{"both", "one"}) || !slices.Equal(got2, []string{"both"}) {
				t.Fatalf("a1 got %q, a2 got %q", got1, got2)
			}
		})
	}
}

// A connection the server ends with "come back later" (4004) is made again
// and every room resumes from its last id: nothing lost, nothing twice.
func TestReconnectResumesRooms(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 100}))
			c := dial(t, s.URL+"/live", "alice", tr.t, &client.Options{MinDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond})
			ctx := ctxT(t)
			sub, err := c.Subscribe(ctx, "chat:1")
			if err != nil {
				t.Fatal(err)
			}
			msgs := pull(t, sub.Messages(ctx))
			for i := range 2 {
				if _, err := s.PublishAck(ctx, "chat:1", text(fmt.Sprint("m", i))); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 2 {
				if m := next(t, msgs); textOf(m) != fmt.Sprint("m", i) {
					t.Fatalf("message %d is %q", i, textOf(m))
				}
			}
			first := c.Conn()
			if err := s.DisconnectConn(ctx, first, pubsub.Disconnect{Reason: "moving", Reconnect: true}); err != nil {
				t.Fatal(err)
			}
			for i := 2; i < 5; i++ { // while it is away
				if _, err := s.PublishAck(ctx, "chat:1", text(fmt.Sprint("m", i))); err != nil {
					t.Fatal(err)
				}
			}
			for i := 2; i < 5; i++ {
				if m := next(t, msgs); textOf(m) != fmt.Sprint("m", i) {
					t.Fatalf("message %d is %q", i, textOf(m))
				}
			}
			if c.Conn() == first {
				t.Fatal("still the first connection")
			}
			_, _ = s.PublishAck(ctx, "chat:1", text("live"))
			_, _ = s.PublishAck(ctx, "chat:1", text("end"))
			if got := textsUntil(t, msgs, "end"); !slices.Equal(got, []string{"live"}) {
				t.Fatalf("after the resume: %q", got)
			}
		})
	}
}

// The server ending the connection for good (4003) stops the client: its
// iterators end with a *CloseError, and it does not reconnect.
func TestDisconnectedForGood(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t)
			c := dial(t, s.URL+"/live", "mallory", tr.t, &client.Options{MinDelay: 10 * time.Millisecond})
			ctx := ctxT(t)
			sub, err := c.Subscribe(ctx, "lobby")
			if err != nil {
				t.Fatal(err)
			}
			if n, err := s.DisconnectUser(ctx, "mallory", pubsub.Disconnect{Reason: "banned"}); n != 1 || err != nil {
				t.Fatalf("DisconnectUser: %d %v", n, err)
			}
			select {
			case <-c.Done():
			case <-time.After(wait):
				t.Fatal("client still running")
			}
			var ce *client.CloseError
			if !errors.As(c.Err(), &ce) || ce.Code != 4003 || ce.Reason != "banned" {
				t.Fatalf("Err: %v", c.Err())
			}
			for _, err := range sub.Messages(ctx) {
				if !errors.As(err, &ce) {
					t.Fatalf("iterator ended with %v", err)
				}
			}
			time.Sleep(100 * time.Millisecond) // a reconnect would show here
			if conns, _ := s.UserConns(ctx, "mallory"); len(conns) != 0 {
				t.Fatalf("reconnected: %v", conns)
			}
		})
	}
}

// A host that refuses the request fails Dial with its status.
func TestDialRefused(t *testing.T) {
	s := newServer(t)
	for _, tr := range append(transports, struct {
		name string
		t    client.Transport
	}{"auto", client.Auto}) {
		t.Run(tr.name, func(t *testing.T) {
			_, err := client.Dial(ctxT(t), s.URL+"/live", &client.Options{Transport: tr.t, Logger: quiet()})
			var ce *client.CloseError
			if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
				t.Fatalf("Dial: %v", err)
			}
		})
	}
	// Nothing listening: a plain error, at once.
	_, err := client.Dial(ctxT(t), "http://127.0.0.1:1/live", &client.Options{Logger: quiet()})
	if err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}

// Frames far larger than the readers' buffers: a 60 KB message and a
// history answer of 60 messages of 2 KB, intact on both transports.
func TestLargeFrames(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			s := newServer(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 100}))
			c := dial(t, s.URL+"/live", "gina", tr.t, nil)
			ctx := ctxT(t)
			sub, err := c.Subscribe(ctx, "chat:big")
			if err != nil {
				t.Fatal(err)
			}
			msgs := pull(t, sub.Messages(ctx))
			big := strings.Repeat("é", 30000) // 60,000 bytes
			if _, err := s.PublishAck(ctx, "chat:big", text(big)); err != nil {
				t.Fatal(err)
			}
			if m := next(t, msgs); textOf(m) != big {
				t.Fatalf("a message of %d bytes arrived as %d", len(big), len(textOf(m)))
			}
			// Events of every length straddle the reader's buffer at every offset.
			for i := range 300 {
				if err := s.Publish(ctx, "chat:big", text(fmt.Sprintf("%03d", i)+strings.Repeat("y", i*7))); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 300 {
				if got := textOf(next(t, msgs)); got != fmt.Sprintf("%03d", i)+strings.Repeat("y", i*7) {
					t.Fatalf("message %d: %.10q… (%d bytes)", i, got, len(got))
				}
			}
			for i := range 60 {
				if _, err := s.PublishAck(ctx, "chat:big", text(fmt.Sprintf("%02d", i)+strings.Repeat("x", 2000))); err != nil {
					t.Fatal(err)
				}
			}
			hist, err := c.History(ctx, "chat:big", 60)
			if err != nil || len(hist) != 60 {
				t.Fatalf("history: %d messages, %v", len(hist), err)
			}
			for i, m := range hist {
				if got := textOf(m); len(got) != 2002 || got[:2] != fmt.Sprintf("%02d", i) {
					t.Fatalf("history message %d: %.10q… (%d bytes)", i, got, len(got))
				}
			}
		})
	}
}

// httpProxy forwards plain HTTP requests to target, line by line and
// flushed so that SSE streams pass, and refuses WebSocket upgrades with 403
// as a proxy that blocks them does. cut, if not nil, is asked after each
// line it forwarded whether to end the response there (a cut route).
func httpProxy(t *testing.T, target string, cut func(line []byte) bool) *httptest.Server {
	p := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "upgrades are not allowed here", http.StatusForbidden)
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			if k != "Connection" && k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(resp.StatusCode)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadBytes('\n')
			_, _ = w.Write(line)
			w.(http.Flusher).Flush()
			if err != nil || cut != nil && cut(line) {
				return
			}
		}
	}))
	t.Cleanup(func() { p.CloseClientConnections(); p.Close() })
	return p
}
