package pubsub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/roomcast/pubsub"
)

// Server code moves a user's connections into a room, wherever they are,
// and ends them; the client is told with frames marked "by":"server".
func ExampleBroker_SubscribeUser() {
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
	c := dial(ctx, srv, "bob", "", 1) // welcome
	defer c.CloseNow()

	n, _ := ps.SubscribeUser(ctx, "bob", "game:42")
	fmt.Println("moved", n, "connection:", c.next(ctx))

	n, _ = ps.DisconnectUser(ctx, "bob", pubsub.Disconnect{Reason: "kicked"})
	_, _, err = c.c.Read(ctx)
	fmt.Println("kicked", n, "connection:", err)
	// Output:
	// moved 1 connection: {"type":"subscribed","room":"game:42","by":"server"}
	// kicked 1 connection: failed to get reader: received close frame: status = StatusCode(4003) and reason = "kicked"
}

// The host's middleware gives a connection its session's expiry; the
// connection is asked to refresh before it and ends at it unless a
// refresh (a POST through the same middleware) extends it.
func ExampleContextWithExpiry() {
	ctx := context.Background()
	ps, _ := pubsub.New()
	defer ps.Close()
	sessionEnd := time.Now().Add(2 * time.Second) // the host's session, e.g. its cookie's expiry
	withSession := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := pubsub.ContextWithUser(r.Context(), "carol")
			next.ServeHTTP(w, r.WithContext(pubsub.ContextWithExpiry(ctx, sessionEnd)))
		})
	}
	mux := http.NewServeMux()
	mux.Handle("/live", withSession(ps.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := dial(ctx, srv, "carol", "", 1) // welcome
	defer c.CloseNow()

	var f struct{ Type string }
	_ = json.Unmarshal([]byte(c.next(ctx)), &f)
	fmt.Println(f.Type, "before the expiry") // the browser client POSTs {"type":"refresh","conn":…} to /live
	_, _, err := c.c.Read(ctx)
	fmt.Println(err)
	// Output:
	// refresh before the expiry
	// failed to get reader: received close frame: status = StatusCode(4005) and reason = "session expired"
}
