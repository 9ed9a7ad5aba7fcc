package pubsub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// sessions is a host's cookie session store with a sliding expiry: every
// request it lets through renews the session for ttl. Deleting a session
// is a logout or a revocation.
type sessions struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]*session // by cookie value
}

type session struct {
	user string
	ends time.Time
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, m: map[string]*session{}}
}

func (s *sessions) login(user string) *http.Cookie {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := "sid-" + user + "-" + time.Now().Format("150405.000000000")
	s.m[id] = &session{user: user, ends: time.Now().Add(s.ttl)}
	return &http.Cookie{Name: "sid", Value: id}
}

func (s *sessions) revoke(c *http.Cookie) {
	s.mu.Lock()
	delete(s.m, c.Value)
	s.mu.Unlock()
}

// middleware is the host's own: 401 without a live session, otherwise the
// user and the session's (renewed) expiry in the context.
func (s *sessions) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie("sid")
		if err != nil {
			http.Error(w, "log in", http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		sess := s.m[ck.Value]
		if sess != nil && time.Now().After(sess.ends) {
			delete(s.m, ck.Value)
			sess = nil
		}
		if sess == nil {
			s.mu.Unlock()
			http.Error(w, "session expired", http.StatusUnauthorized)
			return
		}
		sess.ends = time.Now().Add(s.ttl)
		user, ends := sess.user, sess.ends
		s.mu.Unlock()
		ctx := ContextWithExpiry(ContextWithUser(r.Context(), user), ends)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func serveSessions(t *testing.T, b *Broker, s *sessions) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("/live", s.middleware(b.Handler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// postRefresh asks srv to refresh connection conn, as the browser client
// does, with the cookie ck (nil: none).
func postRefresh(t *testing.T, srv *httptest.Server, ck *http.Cookie, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/live", strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if ck != nil {
		req.AddCookie(ck)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp, buf.String()
}

func refreshBody(conn string) string {
	b, _ := json.Marshal(map[string]string{"type": "refresh", "conn": conn})
	return string(b)
}

// waitRefreshFrame reads c until the server asks for a refresh.
func waitRefreshFrame(t *testing.T, c client) testkit.Frame {
	t.Helper()
	for {
		f := testkit.Next(t, c)
		if f.Type == "refresh" {
			return f
		}
	}
}

// A connection follows the host's session: asked to refresh before its
// expiry, refreshed through the host's own middleware, it lives past its
// first expiry without reconnecting; once the session is revoked, the
// refresh is refused by that middleware and the connection ends at the
// expiry with 4005. Over WebSocket and SSE.
func TestSessionRefreshThroughHostMiddleware(t *testing.T) {
	const ttl = 2 * time.Second
	for _, transport := range []string{"websocket", "sse"} {
		t.Run(transport, func(t *testing.T) {
			b := newBroker(t)
			s := newSessions(ttl)
			srv := serveSessions(t, b, s)
			ck := s.login("alice")
			start := time.Now().Truncate(time.Millisecond) // the middleware names the expiry after this (frames carry milliseconds)
			var c client
			if transport == "websocket" {
				ws, _, err := testkit.DialWS(ctx, liveURL(srv, "ws", []string{"r"}), wsOptions(http.Header{"Cookie": {ck.String()}}))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ws.Cut() })
				c = ws
			} else {
				sse, _, err := testkit.DialSSE(srv.Client(), liveURL(srv, "http", []string{"r"}), http.Header{"Cookie": {ck.String()}})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(sse.Close)
				if err := sse.ReadWelcome(); err != nil {
					t.Fatal(err)
				}
				c = sse
			}

			// Asked halfway (a session shorter than a minute), with the expiry.
			f := waitRefreshFrame(t, c)
			expires := time.UnixMilli(f.Expires)
			if d := expires.Sub(start); d < ttl {
				t.Fatalf("refresh names the expiry %v after connecting, want the session's (%v)", d, ttl)
			}
			resp, body := postRefresh(t, srv, ck, "application/json", refreshBody(c.ConnID()))
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"type":"refreshed"`) {
				t.Fatalf("refresh: %s %q", resp.Status, body)
			}
			// Past the first expiry, still the same connection.
			time.Sleep(time.Until(expires) + 300*time.Millisecond)
			_ = b.Publish(ctx, "r", msg("after the first expiry"))
			sendMarker(t, b, c, "end")
			var got []string
			asked := expires
			for _, f := range collect(t, c, "end") {
				if f.Type == "refresh" {
					asked = time.UnixMilli(f.Expires)
				} else {
					got = append(got, f.Type+":"+f.Text())
				}
			}
			if strings.Join(got, ",") != "message:after the first expiry" {
				t.Fatalf("after the first expiry got %v", got)
			}

			// Revoked: the next refresh is refused by the host, and the
			// connection ends at its expiry.
			s.revoke(ck)
			if !asked.After(expires) {
				f = waitRefreshFrame(t, c)
				asked = time.UnixMilli(f.Expires)
			}
			if resp, _ := postRefresh(t, srv, ck, "application/json", refreshBody(c.ConnID())); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("a refresh of a revoked session: %s", resp.Status)
			}
			code, reason := expectClose(t, c)
			ended := time.Now()
			if code != CloseSessionExpired || reason != "session expired" {
				t.Fatalf("closed with %d %q, want 4005", code, reason)
			}
			if early := asked.Sub(ended); early > 50*time.Millisecond {
				t.Errorf("closed %v before the expiry", early)
			}
		})
	}
}

// A refresh is the same user's, for a live connection, as JSON: anything
// else is refused with a named error and extends nothing.
func TestSessionRefreshRefusals(t *testing.T) {
	const ttl = 3 * time.Second
	b := newBroker(t)
	s := newSessions(ttl)
	srv := serveSessions(t, b, s)
	alice, mallory := s.login("alice"), s.login("mallory")
	ws, _, err := testkit.DialWS(ctx, liveURL(srv, "ws", nil), wsOptions(http.Header{"Cookie": {alice.String()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Cut()
	first := ws.Welcome
	conns, _ := b.UserConns(ctx, "alice")
	if len(conns) != 1 || conns[0].Expires.IsZero() {
		t.Fatalf("UserConns = %+v, want one with an expiry", conns)
	}
	before := conns[0].Expires

	for _, tc := range []struct {
		name        string
		ck          *http.Cookie
		contentType string
		body        string
		status      int
		code        string
	}{
		{"another user's connection", mallory, "application/json", refreshBody(first.Conn), http.StatusForbidden, "forbidden"},
		{"a form post", alice, "application/x-www-form-urlencoded", refreshBody(first.Conn), http.StatusUnsupportedMediaType, "bad_request"},
		{"not JSON", alice, "application/json", "refresh", http.StatusBadRequest, "bad_request"},
		{"a frame without a type", alice, "application/json", `{"conn":"` + first.Conn + `"}`, http.StatusBadRequest, "bad_request"},
		{"a hostile id", alice, "application/json", refreshBody("a.>"), http.StatusBadRequest, "invalid_conn"},
		{"a gone connection", alice, "application/json", refreshBody(InstanceID(b) + ".ffff"), http.StatusNotFound, "no_such_conn"},
	} {
		time.Sleep(10 * time.Millisecond) // a renewed session would show a later expiry
		resp, body := postRefresh(t, srv, tc.ck, tc.contentType, tc.body)
		if resp.StatusCode != tc.status || resp.Header.Get("Roomcast-Error") != tc.code {
			t.Errorf("%s: %s %s %q, want %d %s", tc.name, resp.Status, resp.Header.Get("Roomcast-Error"), body, tc.status, tc.code)
		}
	}
	conns, _ = b.UserConns(ctx, "alice")
	if len(conns) != 1 || !conns[0].Expires.Equal(before) {
		t.Errorf("a refused refresh changed the expiry: %v → %+v", before, conns)
	}
	// Without the host's session: the host's own 401, nothing reaches the broker.
	if resp, _ := postRefresh(t, srv, nil, "application/json", refreshBody(first.Conn)); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Roomcast-Error") != "" {
		t.Errorf("no cookie: %s", resp.Status)
	}
	// A cross-site page.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/live", strings.NewReader(refreshBody(first.Conn)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://evil.example")
	req.AddCookie(alice)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin refresh: %s", resp.Status)
	}
}

// A session already expired when the host's middleware lets the request
// through is refused before any connection exists.
func TestSessionExpiredAtConnect(t *testing.T) {
	b := newBroker(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Handler().ServeHTTP(w, r.WithContext(ContextWithExpiry(ContextWithUser(r.Context(), "late"), time.Now().Add(-time.Second))))
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, scheme := range []string{"ws", "http"} {
		var resp *http.Response
		var err error
		if scheme == "ws" {
			_, resp, err = testkit.DialWS(ctx, strings.Replace(srv.URL, "http", "ws", 1), nil)
		} else {
			_, resp, err = testkit.DialSSE(srv.Client(), srv.URL, nil)
		}
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Roomcast-Error") != "session_expired" {
			t.Errorf("%s: %v %v", scheme, resp, err)
		}
	}
	if b.Stats().WebSocketConns+b.Stats().SSEConns != 0 {
		t.Error("a connection was made")
	}
}

// The refresh may land on any instance: it reaches the connection's.
func TestSessionRefreshAcrossInstances(t *testing.T) {
	bs := newCluster(t, 2)
	s := newSessions(time.Minute)
	s0, s1 := serveSessions(t, bs[0], s), serveSessions(t, bs[1], s)
	ck := s.login("alice")
	ws, _, err := testkit.DialWS(ctx, liveURL(s1, "ws", nil), wsOptions(http.Header{"Cookie": {ck.String()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Cut()
	eventually(t, "the instances know each other", func() bool { return Instances(bs[0]) == 2 })
	conns, _ := bs[0].UserConns(context.Background(), "alice")
	if len(conns) != 1 {
		t.Fatalf("UserConns = %+v", conns)
	}
	time.Sleep(20 * time.Millisecond)
	resp, body := postRefresh(t, s0, ck, "application/json; charset=utf-8", refreshBody(ws.ConnID()))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh on the other instance: %s %q", resp.Status, body)
	}
	after, _ := bs[0].UserConns(context.Background(), "alice")
	if len(after) != 1 || !after[0].Expires.After(conns[0].Expires) {
		t.Errorf("expiry %v → %+v, want later", conns[0].Expires, after)
	}
}

func wsOptions(h http.Header) *websocket.DialOptions { return &websocket.DialOptions{HTTPHeader: h} }

// An anonymous connection with an expiry is never asked to refresh (it
// could not: a refresh needs a user) and ends at its expiry.
func TestSessionAnonymousEndsAtExpiry(t *testing.T) {
	b := newBroker(t)
	ends := time.Now().Add(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Handler().ServeHTTP(w, r.WithContext(ContextWithExpiry(r.Context(), ends)))
	}))
	defer srv.Close()
	c, _, err := testkit.DialWS(ctx, strings.Replace(srv.URL, "http", "ws", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Cut()
	for {
		f, err := c.NextErr(testkit.Wait)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != CloseSessionExpired {
				t.Fatalf("ended with %v, want 4005", err)
			}
			if early := time.Until(ends); early > 50*time.Millisecond {
				t.Errorf("closed %v before the expiry", early)
			}
			return
		}
		if f.Type == "refresh" {
			t.Fatalf("an anonymous connection was asked to refresh")
		}
	}
}
