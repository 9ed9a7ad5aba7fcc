package client_test

// Faults and races at the client's edges: reconnects that race room
// changes, refusals, cut routes and lost POSTs, against a host whose
// middleware can be told to misbehave.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/client"
)

// host is a server whose middleware (X-User) can be told to refuse, to
// block WebSocket upgrades, or to hold the next SSE GET.
type host struct {
	*pubsub.Broker
	URL        string
	refuse     atomic.Bool // 401 to everything
	block      atomic.Bool // 403 to upgrades, like a proxy
	hold       atomic.Bool // the next SSE GET waits for release
	dropPosts  atomic.Bool // POSTs get their connection closed, no answer
	arrived    chan struct{}
	release    chan struct{}
	releaseOne sync.Once
}

func newHost(t *testing.T, opts ...pubsub.Option) *host {
	t.Helper()
	b, err := pubsub.New(append([]pubsub.Option{pubsub.WithLogger(quiet())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h := &host{Broker: b, arrived: make(chan struct{}, 1), release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.refuse.Load() {
			http.Error(w, "log in", http.StatusUnauthorized)
			return
		}
		if h.dropPosts.Load() && r.Method == http.MethodPost {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		if h.block.Load() && r.Header.Get("Upgrade") != "" {
			http.Error(w, "no upgrades", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/event-stream") && h.hold.CompareAndSwap(true, false) {
			h.arrived <- struct{}{}
			<-h.release
		}
		ctx := r.Context()
		if u := r.Header.Get("X-User"); u != "" {
			ctx = pubsub.ContextWithUser(ctx, u)
		}
		b.Handler().ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(func() {
		h.releaseOne.Do(func() { close(h.release) })
		srv.CloseClientConnections()
		srv.Close()
		_ = b.Close()
	})
	h.URL = srv.URL
	return h
}

var fast = &client.Options{MinDelay: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond}

func fastOpts() *client.Options { o := *fast; return &o }

// Unsubscribing while the room's messages arrive: the reader ranges over
// the room's readers outside the lock, so Unsubscribe must not edit that
// slice in place (a race, and a nil *Subscription for the reader).
func TestUnsubscribeWhileMessagesArrive(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.URL+"/live", "alice", client.WebSocket, nil)
	ctx := ctxT(t)
	keep, err := c.Subscribe(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				_ = s.Publish(ctx, "lobby", text("x"))
			}
		}
	})
	next(t, pull(t, keep.Messages(ctx))) // messages flow
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		a, err := c.Subscribe(ctx, "lobby")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := c.Subscribe(ctx, "lobby")
		_ = a.Unsubscribe(ctx)
		_ = b.Unsubscribe(ctx)
	}
	close(stop)
	wg.Wait()
}

// Close ends every iterator of a queue, not only the one a wake-up reaches.
func TestCloseEndsEveryIterator(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.URL+"/live", "alice", client.WebSocket, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // frees the stuck one after the failure
	done := make(chan error, 2)
	for range 2 {
		go func() {
			var last error
			for _, err := range c.Messages(ctx) {
				last = err
			}
			done <- last
		}()
	}
	time.Sleep(100 * time.Millisecond) // both wait
	c.Close()
	for i := range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, client.ErrClosed) {
				t.Errorf("iterator %d ended with %v", i, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("iterator %d still running 2 s after Close", i)
		}
	}
}

// SSE: a room subscribed (or unsubscribed) after the reconnecting stream's
// URL was built but before its welcome: the client replaces the stream, so
// Subscribe is answered and the left room's messages stop.
func TestSSERoomChangeWhileReconnecting(t *testing.T) {
	h := newHost(t)
	o := fastOpts()
	o.Header = http.Header{"X-User": {"alice"}}
	c := dial(t, h.URL, "alice", client.SSE, o)
	ctx := ctxT(t)
	news, err := c.Subscribe(ctx, "news")
	if err != nil {
		t.Fatal(err)
	}
	h.hold.Store(true)
	if err := h.DisconnectConn(ctx, c.Conn(), pubsub.Disconnect{Reconnect: true}); err != nil {
		t.Fatal(err)
	}
	<-h.arrived // the new stream's URL names "news" only
	if err := news.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	sub := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := c.Subscribe(sctx, "lobby")
		sub <- err
	}()
	time.Sleep(100 * time.Millisecond)
	h.releaseOne.Do(func() { close(h.release) })
	if err := <-sub; err != nil {
		t.Errorf("Subscribe during the reconnect: %v", err)
	}
	_ = h.Publish(ctx, "news", text("unsubscribed room"))
	mctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for m, err := range c.Messages(mctx) {
		if err == nil {
			t.Errorf("Client.Messages yields a message of the unsubscribed room: %+v %s", m, m.Data)
		}
		break
	}
}

// LastID, what to keep for WithLastID in a later run, is still there after
// Close.
func TestLastIDAfterClose(t *testing.T) {
	s := newServer(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 10}))
	c := dial(t, s.URL+"/live", "alice", client.WebSocket, nil)
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "chat:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PublishAck(ctx, "chat:1", text("m")); err != nil {
		t.Fatal(err)
	}
	m := next(t, pull(t, sub.Messages(ctx)))
	c.Close()
	if got := sub.LastID(); got != m.ID {
		t.Fatalf("LastID after Close = %q, want %q", got, m.ID)
	}
}

// After WebSocket worked once, a 403 on the upgrade (a proxy, a load
// balancer mid-deploy) while the HEAD probe answers 204 is retried, as the
// browser client does; also with Transport WebSocket.
func TestUpgradeRefusedButServerAnswers(t *testing.T) {
	h := newHost(t)
	o := fastOpts()
	o.Header = http.Header{"X-User": {"alice"}}
	c := dial(t, h.URL, "alice", client.Auto, o)
	ctx := ctxT(t)
	h.block.Store(true)
	if err := h.DisconnectConn(ctx, c.Conn(), pubsub.Disconnect{Reconnect: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
		t.Fatalf("the client stopped for good: %v", c.Err())
	case <-time.After(2 * time.Second):
	}
}

// A reconnect refused by the host (401) ends the client with a
// *CloseError that carries the status: "log in again", not a kick.
func TestRefusalAfterReconnectKeepsStatus(t *testing.T) {
	h := newHost(t)
	o := fastOpts()
	o.Header = http.Header{"X-User": {"alice"}}
	c := dial(t, h.URL, "alice", client.WebSocket, o)
	ctx := ctxT(t)
	h.refuse.Store(true)
	if err := h.DisconnectConn(ctx, c.Conn(), pubsub.Disconnect{Reconnect: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("still running")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || ce.Status != http.StatusUnauthorized {
		t.Fatalf("Err = %#v (%v), want a *CloseError with Status 401", c.Err(), c.Err())
	}
}

// Anonymous SSE over the room limit: the server says too_many_rooms, the
// new room is refused with ErrTooManyRooms and the others stay connected
// (no reconnect loop).
func TestAnonymousSSETooManyRooms(t *testing.T) {
	s := newServer(t, pubsub.WithMaxRooms(2))
	var logs syncBuf
	o2 := fastOpts()
	o2.Transport = client.SSE
	o2.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c2, err := client.Dial(ctxT(t), s.URL+"/open", o2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ctx := ctxT(t)
	for _, r := range []string{"a", "b"} {
		if _, err := c2.Subscribe(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = c2.Subscribe(sctx, "c")
	if !errors.Is(err, client.ErrTooManyRooms) {
		t.Errorf("Subscribe of a third room: %v; reconnects logged: %d, e.g. %q", err,
			strings.Count(logs.String(), "reconnecting"), firstLine(logs.String(), "reconnecting"))
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// SSE: the resume cursor moves when an event is dispatched, not at its
// "id:" line: a stream cut inside an event resumes before it.
func TestSSECursorMovesAtDispatch(t *testing.T) {
	s := newServer(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 100}))
	var cut atomic.Bool
	proxy := httpProxy(t, s.URL, func(line []byte) bool {
		return bytes.HasPrefix(line, []byte("id:")) && cut.CompareAndSwap(true, false) // the route is cut mid-event
	})
	o := fastOpts()
	c := dial(t, proxy.URL+"/live", "alice", client.SSE, o)
	ctx := ctxT(t)
	sub, err := c.Subscribe(ctx, "chat:1")
	if err != nil {
		t.Fatal(err)
	}
	msgs := pull(t, sub.Messages(ctx))
	_, _ = s.PublishAck(ctx, "chat:1", text("m0"))
	next(t, msgs)
	cut.Store(true)
	_, _ = s.PublishAck(ctx, "chat:1", text("m1"))
	waitUntil(t, func() bool { return !cut.Load() })
	_, _ = s.PublishAck(ctx, "chat:1", text("m2"))
	_, _ = s.PublishAck(ctx, "chat:1", text("end"))
	if got := textsUntil(t, msgs, "end"); strings.Join(got, ",") != "m1,m2" {
		t.Fatalf("after the cut: %q, want [m1 m2]", got)
	}
}

// Send returns the server's refusal (an anonymous SSE POST is a 403
// forbidden), not ErrConnectionLost.
func TestSendRefusal(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.URL+"/open", "", client.SSE, nil)
	err := c.Send(ctxT(t), map[string]int{"x": 1})
	if !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("Send: %v, want ErrForbidden", err)
	}
}

// A caller's last id that is not a store position fails Subscribe with
// ErrInvalidID.
func TestSubscribeWithInvalidLastID(t *testing.T) {
	s := newServer(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 10}))
	c := dial(t, s.URL+"/live", "alice", client.WebSocket, nil)
	_, err := c.Subscribe(ctxT(t), "chat:1", client.WithLastID("not-a-position"))
	if !errors.Is(err, client.ErrInvalidID) {
		t.Fatalf("Subscribe After(bogus): %v, want ErrInvalidID", err)
	}
}

// SSE keeps one resume cursor for the stream. A subscription made
// WithLastID(x) replays older positions of its room; the cursor does not
// move back, and a reconnect delivers no id twice to any room.
func TestSSEResumeFromOlderIDNoDuplicates(t *testing.T) {
	s := newServer(t, pubsub.WithHistory("chat:*", pubsub.History{Messages: 100}))
	c := dial(t, s.URL+"/live", "alice", client.SSE, fastOpts())
	ctx := ctxT(t)
	var first string
	for i := range 3 {
		id, err := s.PublishAck(ctx, "chat:b", text("b"))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = id.ID
		}
	}
	a, err := c.Subscribe(ctx, "chat:a")
	if err != nil {
		t.Fatal(err)
	}
	msgs := pull(t, a.Messages(ctx))
	_, _ = s.PublishAck(ctx, "chat:a", text("a1"))
	m := next(t, msgs)
	b, err := c.Subscribe(ctx, "chat:b", client.WithLastID(first)) // replays two older positions
	if err != nil {
		t.Fatal(err)
	}
	bm := pull(t, b.Messages(ctx))
	next(t, bm)
	next(t, bm)
	if err := s.DisconnectConn(ctx, c.Conn(), pubsub.Disconnect{Reconnect: true}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { cs, _ := s.UserConns(ctx, "alice"); return len(cs) == 1 && cs[0].ID == c.Conn() })
	_, _ = s.PublishAck(ctx, "chat:a", text("end"))
	for {
		got := next(t, msgs)
		if got.ID == m.ID {
			t.Fatalf("chat:a delivered id %s twice", m.ID)
		}
		if textOf(got) == "end" {
			return
		}
	}
}

// Anonymous SSE: server code subscribing the connection to a room
// (SubscribeConn) keeps the connection (its id is the server's handle);
// the stream's URL names the room from the next reconnect.
func TestAnonymousSSEServerRoomKeepsConn(t *testing.T) {
	s := newServer(t)
	c := dial(t, s.URL+"/open", "", client.SSE, nil)
	ctx := ctxT(t)
	conn := c.Conn()
	if err := s.SubscribeConn(ctx, conn, "game"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := s.SendToConn(ctx, conn, text("your move")); err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for m, err := range c.Messages(mctx) {
		if err != nil {
			t.Fatalf("the connection %s the server addressed is gone (now %s): %v", conn, c.Conn(), err)
		}
		if textOf(m) == "your move" {
			return
		}
	}
}

// SSE: a POST lost on the network while the stream stays up: the client
// replaces the stream (its URL states the rooms again), so Subscribe is
// answered, and a request that keeps failing ends with ErrConnectionLost
// instead of waiting for ctx.
func TestSSELostPost(t *testing.T) {
	h := newHost(t)
	o := fastOpts()
	o.Header = http.Header{"X-User": {"alice"}}
	c := dial(t, h.URL, "alice", client.SSE, o)
	h.dropPosts.Store(true)
	ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, "lobby"); err != nil {
		t.Errorf("Subscribe: %v", err)
	}
	if _, err := c.History(ctx, "lobby", 1); errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("History: %v (no error of its own: it waited for ctx)", err)
	}
}
