// Command notify shows per-user notifications: a REST call
// POST /api/notify/{user} reaches every open tab of that user, and no one
// else, whichever instance each tab is connected to.
//
//	go run ./examples/notify          # then open http://127.0.0.1:8081 in two browsers
package main

import (
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/examples/internal/demoapp"
	"github.com/roomcast/pubsub/examples/internal/demoauth"
)

//go:embed index.html
var indexHTML []byte

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ps, err := pubsub.New(pubsub.WithLogger(logger))
	if err != nil {
		log.Fatal(err)
	}
	if err := demoapp.Serve(*addr, newApp(ps, demoauth.New()), ps, logger); err != nil {
		log.Fatal(err)
	}
}

type notification struct {
	From  string    `json:"from"`
	Title string    `json:"title"`
	Body  string    `json:"body,omitempty"`
	At    time.Time `json:"at"`
}

func newApp(ps *pubsub.Broker, auth *demoauth.Sessions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", demoapp.Page(indexHTML))
	auth.Mount(mux)
	// Any logged-in user may notify any user: a demo. A real app would check
	// who may notify whom, or notify from its own events.
	mux.Handle("POST /api/notify/{user}", auth.RequireLogin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n notification
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&n); err != nil || strings.TrimSpace(n.Title) == "" {
			http.Error(w, `body must be JSON {"title": "...", "body": "..."}`, http.StatusBadRequest)
			return
		}
		n.From, n.At = pubsub.UserFromContext(r.Context()), time.Now().UTC()
		data, _ := json.Marshal(n)
		if err := ps.SendToUser(r.Context(), r.PathValue("user"), data); err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, pubsub.ErrInvalidUser) {
				status = http.StatusBadRequest
			}
			http.Error(w, err.Error(), status)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})))
	// Connections need a login; the browser client is a public static file.
	mux.Handle("/live", auth.RequireLogin(ps.Handler()))
	mux.Handle("GET /live/client.js", ps.Handler())
	return mux
}
