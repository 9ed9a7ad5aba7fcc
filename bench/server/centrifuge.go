package main

import (
	"context"
	"log"
	"net/http"
	"strings"

	"github.com/centrifugal/centrifuge"
)

// centrifugeImpl is github.com/centrifugal/centrifuge used as its README
// shows, with its defaults: a Node with the in-memory broker, credentials
// put in the request's context by an auth middleware, and server-side
// subscriptions given in OnConnecting (the query's rooms, plus a personal
// channel "#"+user), so a client only sends its connect command. JSON
// protocol.
//
// Defaults that matter for the comparison (v0.40.1, read from its source):
// per-client queue of 1 MiB (Config.ClientQueueMaxSize; past it the client
// is disconnected as slow, 3008), at most 16 messages per frame ("\n"-joined)
// and no write delay, WebSocket write timeout 1 s, 4 KiB read and write
// buffers, no permessage-deflate, application-level ping `{}` every 25 s
// that the client must answer within 10 s (WebSocket: a `{}` frame; SSE: a
// POST to the emulation endpoint), connect command due within 15 s of the
// connection, Prometheus metrics on the default registerer.
type centrifugeImpl struct {
	node *centrifuge.Node
	ws   http.Handler
	sse  http.Handler
	emu  http.Handler
}

type cfRoomsKey struct{}

// cfUserChannel is the personal channel a user's connections are subscribed
// to on the server side; sendUser publishes there.
func cfUserChannel(user string) string { return "#" + user }

func newCentrifuge() *centrifugeImpl {
	node, err := centrifuge.New(centrifuge.Config{
		LogLevel: centrifuge.LogLevelError,
		LogHandler: func(e centrifuge.LogEntry) {
			log.Printf("centrifuge: %s %v", e.Message, e.Fields)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		subs := map[string]centrifuge.SubscribeOptions{}
		rooms, _ := ctx.Value(cfRoomsKey{}).([]string)
		for _, r := range rooms {
			subs[r] = centrifuge.SubscribeOptions{}
		}
		if cred, ok := centrifuge.GetCredentials(ctx); ok && cred.UserID != "" {
			subs[cfUserChannel(cred.UserID)] = centrifuge.SubscribeOptions{}
		}
		return centrifuge.ConnectReply{Subscriptions: subs}, nil
	})
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}
	return &centrifugeImpl{
		node: node,
		ws:   centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{}),
		sse:  centrifuge.NewSSEHandler(node, centrifuge.SSEConfig{}),
		emu:  centrifuge.NewEmulationHandler(node, centrifuge.EmulationConfig{}),
	}
}

// handler serves both transports on one path, as roomcast does: a
// WebSocket upgrade goes to the WebSocket handler, Accept: text/event-stream
// to the SSE handler (connect command in the cf_connect query parameter).
// The middleware sets the user from the query as a host's auth would, and
// the rooms for OnConnecting.
func (ci *centrifugeImpl) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ctx := centrifuge.SetCredentials(r.Context(), &centrifuge.Credentials{UserID: q.Get("user")})
		ctx = context.WithValue(ctx, cfRoomsKey{}, q["room"])
		r = r.WithContext(ctx)
		switch {
		case strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
			ci.ws.ServeHTTP(w, r)
		case strings.Contains(r.Header.Get("Accept"), "text/event-stream"):
			ci.sse.ServeHTTP(w, r)
		default:
			http.Error(w, "WebSocket or SSE only", http.StatusBadRequest)
		}
	})
}

// routes adds the emulation endpoint, through which an SSE client sends its
// commands (here only pongs), as centrifuge-js does (its default path).
func (ci *centrifugeImpl) routes(mux *http.ServeMux) { mux.Handle("/emulation", ci.emu) }

func (ci *centrifugeImpl) publish(room string, msg []byte) {
	if _, err := ci.node.Publish(room, msg); err != nil {
		log.Print(err)
	}
}

func (ci *centrifugeImpl) sendUser(user string, msg []byte) {
	if _, err := ci.node.Publish(cfUserChannel(user), msg); err != nil {
		log.Print(err)
	}
}
