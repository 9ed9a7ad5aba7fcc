// Command chat is a small chat app: one cookie login protects both its REST
// API and the real-time endpoint, which is the point of roomcast/pubsub.
//
//	go run ./examples/chat            # then open http://127.0.0.1:8080
//	go run ./examples/chat -addr :9000
//	go run ./examples/chat -session-ttl 1m   # sessions expire: watch live connections refresh
//
// The user named "admin" (a name given only to a browser on this machine)
// is the moderator: the page shows a panel that kicks users and moves them
// between rooms through the REST routes of mountModeration.
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
	"unicode/utf8"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/examples/internal/demoapp"
	"github.com/roomcast/pubsub/examples/internal/demoauth"
	"github.com/roomcast/pubsub/pubsubprom"
)

//go:embed index.html
var indexHTML []byte

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	ttl := flag.Duration("session-ttl", 0, "sessions expire this long after the last request (0: never); live connections refresh through the login middleware")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ps, err := newBroker(pubsub.WithLogger(logger))
	if err != nil {
		log.Fatal(err)
	}
	auth := demoauth.New()
	auth.TTL = *ttl
	if err := demoapp.Serve(*addr, newApp(ps, auth), ps, logger); err != nil {
		log.Fatal(err)
	}
}

// newApp wires the app: its own login, its own REST API, and the pubsub
// handler, all behind the same middleware.
func newApp(ps *pubsub.Broker, auth *demoauth.Sessions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", demoapp.Page(indexHTML))
	auth.Mount(mux)

	api := http.NewServeMux()
	api.HandleFunc("POST /api/rooms/{room}/messages", func(w http.ResponseWriter, r *http.Request) {
		text, ok := readText(w, r)
		if !ok {
			return
		}
		msg, _ := json.Marshal(chatMessage{From: pubsub.UserFromContext(r.Context()), Text: text, At: time.Now().UTC()})
		if err := ps.Publish(r.Context(), r.PathValue("room"), msg); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "sent"})
	})
	api.HandleFunc("POST /api/users/{user}/messages", func(w http.ResponseWriter, r *http.Request) {
		text, ok := readText(w, r)
		if !ok {
			return
		}
		from, to := pubsub.UserFromContext(r.Context()), r.PathValue("user")
		msg, _ := json.Marshal(chatMessage{From: from, To: to, Text: text, At: time.Now().UTC()})
		// The recipient's inbox (their tabs now, or when they log in) and the sender's other tabs.
		if _, err := ps.SendToInbox(r.Context(), to, msg); err != nil {
			writeError(w, err)
			return
		}
		if to != from {
			_ = ps.SendToUser(r.Context(), from, msg)
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "sent"})
	})
	mux.Handle("/api/", auth.RequireLogin(api))
	mountModeration(mux, ps, auth)
	mountOps(mux, ps, auth)
	// Logging out ends the user's live connections in every tab.
	auth.OnLogout = func(r *http.Request, user string) {
		_, _ = ps.DisconnectUser(r.Context(), user, pubsub.Disconnect{Reason: "logged out"})
	}
	// Connections need a login; the browser client is a public static file.
	mux.Handle("/live", auth.RequireLogin(ps.Handler()))
	mux.Handle("GET /live/client.js", ps.Handler())
	return mux
}

// mountOps adds what an operator uses, each a line of Go API: the live ops
// page, Prometheus metrics, this instance's stats as JSON and who is in a
// room, behind the app's own operator check, and the health probe.
func mountOps(mux *http.ServeMux, ps *pubsub.Broker, auth *demoauth.Sessions) {
	op := auth.RequireOperator
	mux.Handle("GET /admin", op(ps.AdminHandler()))
	mux.Handle("GET /metrics", op(pubsubprom.Handler(ps)))
	mux.Handle("GET /healthz", ps.ReadyHandler())
	mux.Handle("GET /api/stats", op(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, ps.Stats())
	})))
	mux.Handle("GET /api/rooms/{room}/users", op(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := ps.Presence(r.Context(), r.PathValue("room"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
	})))
}

type chatMessage struct {
	From string    `json:"from"`
	To   string    `json:"to,omitempty"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

func readText(w http.ResponseWriter, r *http.Request) (string, bool) {
	var body struct{ Text string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be JSON {\"text\": \"...\"}"})
		return "", false
	}
	body.Text = strings.TrimSpace(body.Text)
	if body.Text == "" || utf8.RuneCountInString(body.Text) > 2000 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "text must be 1 to 2000 characters"})
		return "", false
	}
	return body.Text, true
}

func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, pubsub.ErrInvalidRoom) || errors.Is(err, pubsub.ErrInvalidUser) {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
