package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/client"
)

// A Go program subscribes to a room of an app and reads its messages. The
// app here is a test server; its middleware takes the user from a header,
// as a real one would from its session cookie.
func ExampleDial() {
	ps, _ := pubsub.New(pubsub.WithLogger(quiet()))
	defer ps.Close()
	app := httptest.NewServer(pubsub.Identify(func(r *http.Request) string { return r.Header.Get("X-User") })(ps.Handler()))
	defer app.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, app.URL, &client.Options{Header: http.Header{"X-User": {"alice"}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	lobby, err := c.Subscribe(ctx, "lobby")
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = ps.Publish(ctx, "lobby", []byte(`{"text":"hello"}`))
	for msg, err := range lobby.Messages(ctx) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(c.User(), "got", string(msg.Data), "in", msg.Room)
		break
	}
	// Output: alice got {"text":"hello"} in lobby
}
