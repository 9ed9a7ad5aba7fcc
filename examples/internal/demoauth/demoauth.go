// Package demoauth is the examples' own cookie login: what a host app
// already has. The cookie holds the user name, its expiry and an HMAC of
// both, keyed per process (a restart means logging in again). Its
// middleware names the user with pubsub.ContextWithUser, which is all the
// pubsub handler needs, and, when sessions expire (TTL), renews the cookie
// on every request and tells the connection the session's expiry with
// pubsub.ContextWithExpiry: a live connection then lives exactly as long as
// the session, refreshed through this same middleware.
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
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roomcast/pubsub"
)

// CookieName is the session cookie.
const CookieName = "demo_session"

// Sessions signs and checks session cookies.
type Sessions struct {
	key []byte
	// TTL, when set, makes sessions expire TTL after the last request that
	// carried them (a sliding expiry). Zero: sessions do not expire.
	TTL time.Duration
	// OnLogout, when set, is called with the user who logs out (the chat
	// ends that user's live connections in every tab).
	OnLogout func(r *http.Request, user string)
}

// New returns Sessions with a random key.
func New() *Sessions {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &Sessions{key: key}
}

// NewWithKey returns Sessions whose cookies are valid on every instance
// that shares key.
func NewWithKey(key []byte) *Sessions { return &Sessions{key: key} }

// sign makes a cookie value for name, valid until exp (Unix seconds, 0:
// forever).
func (s *Sessions) sign(name string, exp int64) string {
	m := hmac.New(sha256.New, s.key)
	payload := base64.RawURLEncoding.EncodeToString([]byte(name)) + "." + strconv.FormatInt(exp, 10)
	m.Write([]byte(payload))
	return payload + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Sessions) verify(v string) (name string, exp int64, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return "", 0, false
	}
	n, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", 0, false
	}
	exp, err = strconv.ParseInt(parts[1], 10, 64)
	if err != nil || !hmac.Equal([]byte(s.sign(string(n), exp)), []byte(v)) {
		return "", 0, false
	}
	if exp != 0 && time.Now().Unix() >= exp {
		return "", 0, false // expired
	}
	return string(n), exp, true
}

// setCookie starts or renews name's session.
func (s *Sessions) setCookie(w http.ResponseWriter, name string) time.Time {
	ck := &http.Cookie{Name: CookieName, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}
	var exp time.Time
	if s.TTL > 0 {
		exp = time.Now().Add(s.TTL).Truncate(time.Second)
		ck.Expires = exp
		ck.Value = s.sign(name, exp.Unix())
	} else {
		ck.Value = s.sign(name, 0)
	}
	http.SetCookie(w, ck)
	return exp
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
	s.setCookie(w, name)
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"name": name})
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// Logout handles POST /logout.
func (s *Sessions) Logout(w http.ResponseWriter, r *http.Request) {
	if name, ok := s.User(r); ok && s.OnLogout != nil {
		s.OnLogout(r, name)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// User returns the logged-in user of r, if any.
func (s *Sessions) User(r *http.Request) (string, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return "", false
	}
	name, _, ok := s.verify(c.Value)
	return name, ok
}

// RequireLogin is ordinary app middleware: 401 without a session, and the
// user stored with pubsub.ContextWithUser otherwise. Put it in front of the app's
// REST API and of the pubsub handler alike. With a TTL it renews the
// session and names its new expiry with pubsub.ContextWithExpiry, so a
// live connection asks to refresh through here before the session ends.
func (s *Sessions) RequireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := s.User(r)
		if !ok {
			http.Error(w, "login required", http.StatusUnauthorized)
			return
		}
		ctx := pubsub.ContextWithUser(r.Context(), name)
		if s.TTL > 0 {
			ctx = pubsub.ContextWithExpiry(ctx, s.setCookie(w, name))
		}
		next.ServeHTTP(w, r.WithContext(ctx))
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
