// Package demoauth is the examples' own cookie login: what a host app
// already has. The cookie holds the user name and an HMAC of it, keyed per
// process (a restart means logging in again). Its middleware names the user
// with pubsub.ContextWithUser, which is all the pubsub handler needs.
package demoauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/roomcast/pubsub"
)

// CookieName is the session cookie.
const CookieName = "demo_session"

// Sessions signs and checks session cookies.
type Sessions struct{ key []byte }

// New returns Sessions with a random key.
func New() *Sessions {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &Sessions{key: key}
}

// NewWithKey returns Sessions whose cookies are valid on every instance
// that shares key.
func NewWithKey(key []byte) *Sessions { return &Sessions{key: key} }

func (s *Sessions) sign(name string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(name))
	return base64.RawURLEncoding.EncodeToString([]byte(name)) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Sessions) verify(v string) (string, bool) {
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

// Login handles POST /login with form field "name". It answers JSON
// {"name": …} to a client that accepts JSON, and redirects to / otherwise.
func (s *Sessions) Login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.FormValue("name"))
	if name == "" || utf8.RuneCountInString(name) > 32 || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' }) {
		http.Error(w, "name must be 1 to 32 printable characters", http.StatusBadRequest)
		return
	}
	// The demo has no passwords: the operator's name is only given to a
	// browser on the machine itself.
	if name == OperatorName && !fromThisMachine(r) {
		http.Error(w, "the name "+OperatorName+" is for the operator, on the server's own machine", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: s.sign(name), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"name": name})
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// Logout handles POST /logout.
func (s *Sessions) Logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// User returns the logged-in user of r, if any.
func (s *Sessions) User(r *http.Request) (string, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return "", false
	}
	return s.verify(c.Value)
}

// RequireLogin is ordinary app middleware: 401 without a session, and the
// user stored with pubsub.ContextWithUser otherwise. Put it in front of the app's
// REST API and of the pubsub handler alike.
func (s *Sessions) RequireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := s.User(r)
		if !ok {
			http.Error(w, "login required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(pubsub.ContextWithUser(r.Context(), name)))
	})
}

// OperatorName is the user whose session may see operator pages.
const OperatorName = "admin"

// RequireOperator guards operator endpoints (the ops page, metrics,
// stats): a session of the user named "admin" (a name Login gives only on
// this machine), or, for the demo's sake, a request made straight from this
// machine (a loopback peer with no proxy header), so that curl on the host
// works without a login. Behind a reverse proxy on the same host that sets
// no X-Forwarded-For (nginx's default), or a sidecar, every request looks
// local: a real app puts its own admin check here.
func (s *Sessions) RequireOperator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name, ok := s.User(r); ok && name == OperatorName {
			next.ServeHTTP(w, r.WithContext(pubsub.ContextWithUser(r.Context(), name)))
			return
		}
		if fromThisMachine(r) {
			next.ServeHTTP(w, r)
			return
		}
		http.Error(w, "operators only: log in as "+OperatorName, http.StatusForbidden)
	})
}

func fromThisMachine(r *http.Request) bool {
	if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Mount adds /login, /logout and GET /api/me to mux.
func (s *Sessions) Mount(mux *http.ServeMux) {
	mux.HandleFunc("POST /login", s.Login)
	mux.HandleFunc("POST /logout", s.Logout)
	mux.Handle("GET /api/me", s.RequireLogin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"name": pubsub.UserFromContext(r.Context())})
	})))
}
