package pubsub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub"
)

// requireLogin stands for the host's own authentication middleware.
func requireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.Header.Get("X-Demo-User") // a real app reads its session cookie
		if user == "" {
			http.Error(w, "login required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(pubsub.ContextWithUser(r.Context(), user)))
	})
}

// client is a WebSocket client, as a browser's `new WebSocket(url)` would
// be. One WebSocket message may hold several frames, one per line.
type exampleClient struct {
	c       *websocket.Conn
	pending []string
}

// dial connects and skips the frames that precede messages.
func dial(ctx context.Context, srv *httptest.Server, user, query string, skip int) *exampleClient {
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/live" + query
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"X-Demo-User": {user}}})
	if err != nil {
		log.Fatal(err)
	}
	cl := &exampleClient{c: c}
	for range skip {
		cl.next(ctx)
	}
	return cl
}

func (cl *exampleClient) next(ctx context.Context) string {
	if len(cl.pending) == 0 {
		_, p, err := cl.c.Read(ctx)
		if err != nil {
			log.Fatal(err)
		}
		cl.pending = strings.Split(string(p), "\n")
	}
	line := cl.pending[0]
	cl.pending = cl.pending[1:]
	return line
}

func (cl *exampleClient) CloseNow() { _ = cl.c.CloseNow() }

// show prints the stable fields of the next frame (ids are random).
func show(ctx context.Context, cl *exampleClient) {
	var f struct {
		Type, Room, To, From string
		Data                 json.RawMessage
	}
	_ = json.Unmarshal([]byte(cl.next(ctx)), &f)
	fmt.Printf("%s room=%q to=%q from=%q data=%s\n", f.Type, f.Room, f.To, f.From, f.Data)
}

// Mount the handler behind the host's middleware and publish from Go code.
func Example() {
	ctx := context.Background()
	ps, err := pubsub.New()
	if err != nil {
		log.Fatal(err)
	}
	defer ps.Close()
	mux := http.NewServeMux()
	mux.Handle("/live", requireLogin(ps.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	c := dial(ctx, srv, "alice", "?room=lobby", 2) // welcome, subscribed
	defer c.CloseNow()

	_ = ps.Publish(ctx, "lobby", []byte(`{"text":"hi"}`))
	show(ctx, c)
	// Output: message room="lobby" to="" from="" data={"text":"hi"}
}

// SendToUser reaches every connection of one user, on any instance.
func ExampleBroker_SendToUser() {
	ctx := context.Background()
	ps, _ := pubsub.New()
	defer ps.Close()
	mux := http.NewServeMux()
	mux.Handle("/live", requireLogin(ps.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tab1 := dial(ctx, srv, "alice", "", 1)
	tab2 := dial(ctx, srv, "alice", "", 1)
	defer tab1.CloseNow()
	defer tab2.CloseNow()

	_ = ps.SendToUser(ctx, "alice", []byte(`{"unread":3}`))
	show(ctx, tab1)
	show(ctx, tab2)
	// Output:
	// direct room="" to="user" from="" data={"unread":3}
	// direct room="" to="user" from="" data={"unread":3}
}

// A host route can drive a connection itself, WebSocket and SSE alike.
func ExampleBroker_Accept() {
	ctx := context.Background()
	ps, _ := pubsub.New()
	defer ps.Close()
	mux := http.NewServeMux()
	mux.Handle("/live", requireLogin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := ps.Accept(w, r)
		if err != nil {
			return // Accept wrote the HTTP error
		}
		_ = conn.Join("game:42")
		for msg := range conn.Messages() { // "send" frames from the client
			reply := fmt.Sprintf(`{"player":%q,"move":%s}`, conn.User(), msg)
			_ = ps.Publish(conn.Context(), "game:42", []byte(reply))
		}
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	c := dial(ctx, srv, "bob", "", 2) // welcome, subscribed game:42
	defer c.CloseNow()
	_ = c.c.Write(ctx, websocket.MessageText, []byte(`{"type":"send","data":"e4"}`))
	show(ctx, c)
	// Output: message room="game:42" to="" from="" data={"player":"bob","move":"e4"}
}

// Identify adapts a host whose authentication keeps its own user type in
// the request context.
func ExampleIdentify() {
	type account struct{ ID string }
	type accountKey struct{}
	hostAuth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			acct := &account{ID: "carol"} // from the host's session store
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), accountKey{}, acct)))
		})
	}
	identify := pubsub.Identify(func(r *http.Request) string {
		if a, ok := r.Context().Value(accountKey{}).(*account); ok {
			return a.ID
		}
		return ""
	})
	h := hostAuth(identify(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("user:", pubsub.UserFromContext(r.Context()))
	})))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/live", nil))
	// Output: user: carol
}

// Authorization hooks see the connection's user and the host's context.
func ExampleWithSubscribeAuth() {
	ps, _ := pubsub.New(
		pubsub.WithSubscribeAuth(func(ctx context.Context, user, room string) error {
			if strings.HasPrefix(room, "user:") && room != "user:"+user {
				return fmt.Errorf("%s may not read %s", user, room)
			}
			return nil
		}),
		pubsub.WithClientPublish(func(ctx context.Context, user, room string) error {
			return nil // any logged-in client may publish to rooms it can name
		}),
	)
	defer ps.Close()
	fmt.Println("ready")
	// Output: ready
}

// Presence answers who is in a room on every instance: users, not tabs.
// A subscriber that asks for it gets the room's members, then join and
// leave events.
func ExampleBroker_Presence() {
	ps, err := pubsub.New()
	if err != nil {
		log.Fatal(err)
	}
	defer ps.Close()
	mux := http.NewServeMux()
	mux.Handle("/live", requireLogin(ps.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()

	// The watcher subscribes with presence: "subscribed", then a snapshot.
	watcher := dial(ctx, srv, "watcher", "?room=lobby&presence=lobby", 2)
	fmt.Println(watcher.next(ctx))
	dial(ctx, srv, "alice", "?room=lobby", 2)
	dial(ctx, srv, "alice", "?room=lobby", 2) // a second tab: no event
	dial(ctx, srv, "bob", "?room=lobby", 2)
	fmt.Println(watcher.next(ctx))
	fmt.Println(watcher.next(ctx))

	p, err := ps.Presence(ctx, "lobby")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Count, "users,", p.Conns, "connections:", p.Members)
	// Output:
	// {"type":"presence","room":"lobby","count":1,"conns":1,"members":[{"user":"watcher","conns":1}]}
	// {"type":"join","room":"lobby","user":"alice","count":2}
	// {"type":"join","room":"lobby","user":"bob","count":3}
	// 3 users, 4 connections: [{alice 2} {bob 1} {watcher 1}]
}
