// Command chat is a small chat app: one cookie login protects both its REST
// API and the real-time endpoint, which is the point of roomcast/pubsub.
//
//	go run ./examples/chat            # then open http://127.0.0.1:8080
//	go run ./examples/chat -addr :9000
package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/roomcast/pubsub"
)

//go:embed index.html
var indexHTML []byte

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ps, err := pubsub.New(pubsub.WithLogger(logger))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: *addr, Handler: newApp(ps, newSessions()), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ps.Shutdown(shutdown) // WebSocket clients get 1012 and reconnect
		_ = srv.Shutdown(shutdown)
	}()
	logger.Info("chat listening", "url", "http://"+*addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// newApp wires the app: its own login, its own REST API, and the pubsub
// handler, all behind the same middleware.
func newApp(ps *pubsub.Broker, s *sessions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(indexHTML)
	})
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)

	api := http.NewServeMux()
	api.HandleFunc("GET /api/me", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"name": pubsub.UserFrom(r.Context())})
	})
	api.HandleFunc("POST /api/rooms/{room}/messages", func(w http.ResponseWriter, r *http.Request) {
		text, ok := readText(w, r)
		if !ok {
			return
		}
		msg, _ := json.Marshal(chatMessage{From: pubsub.UserFrom(r.Context()), Text: text, At: time.Now().UTC()})
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
		from, to := pubsub.UserFrom(r.Context()), r.PathValue("user")
		msg, _ := json.Marshal(chatMessage{From: from, To: to, Text: text, At: time.Now().UTC()})
		// The recipient's tabs and the sender's other tabs.
		if err := ps.SendToUser(r.Context(), to, msg); err != nil {
			writeError(w, err)
			return
		}
		if to != from {
			_ = ps.SendToUser(r.Context(), from, msg)
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "sent"})
	})
	mux.Handle("/api/", s.requireLogin(api))
	mux.Handle("/live", s.requireLogin(ps.Handler()))
	return mux
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

// sessions is the app's own cookie login: the cookie holds the user name
// and an HMAC of it, keyed per process (restart = log in again).
type sessions struct{ key []byte }

const cookieName = "chat_session"

func newSessions() *sessions {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &sessions{key: key}
}

func (s *sessions) sign(name string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(name))
	return base64.RawURLEncoding.EncodeToString([]byte(name)) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *sessions) verify(v string) (string, bool) {
	enc, _, ok := strings.Cut(v, ".")
	if !ok {
		return "", false
	}
	name, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || !hmac.Equal([]byte(s.sign(string(name))), []byte(v)) {
		return "", false
	}
	return string(name), true
}

func (s *sessions) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.FormValue("name"))
	if name == "" || utf8.RuneCountInString(name) > 32 || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' }) {
		http.Error(w, "name must be 1 to 32 printable characters", http.StatusBadRequest)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.sign(name), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, http.StatusOK, map[string]string{"name": name})
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *sessions) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// requireLogin is ordinary app middleware; the user it stores with
// pubsub.WithUser becomes the identity of REST calls and live connections.
func (s *sessions) requireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(cookieName)
		name, ok := "", false
		if err == nil {
			name, ok = s.verify(c.Value)
		}
		if !ok {
			http.Error(w, "login required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(pubsub.WithUser(r.Context(), name)))
	})
}
