package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/roomcast/pubsub/internal/control"
)

// refreshTimeout bounds a refresh: the connection may be on another
// instance.
const refreshTimeout = 5 * time.Second

// serveRefresh answers a POST to the mount path carrying
// {"type":"refresh","conn":id}: the host's middleware has just checked the
// session again (the request went through it, cookie and all) and named
// the new expiry with ContextWithExpiry; the connection, on whatever
// instance, gets it if it is the same user's.
//
// Cross-site requests cannot make one: the body must be JSON with
// Content-Type application/json (a form or a no-CORS fetch cannot send
// that without a preflight), and a browser Origin must pass the same rule
// as a connection's.
func (b *Broker) serveRefresh(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	refuse := func(status int, code, msg string) {
		b.logRefused(r, "refresh", fmt.Sprintf("a refresh (%s): %s", code, msg))
		w.Header().Set("Roomcast-Error", code)
		http.Error(w, msg, status)
	}
	if !b.originAllowed(r) {
		refuse(http.StatusForbidden, "forbidden", "cross-origin request from "+truncate(r.Header.Get("Origin")))
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		refuse(http.StatusUnsupportedMediaType, "bad_request", "the body must be application/json")
		return
	}
	var req struct {
		Type string `json:"type"`
		Conn string `json:"conn"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(b.cfg.maxMessage)+1))
	switch {
	case err != nil:
		refuse(http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	case len(body) > b.cfg.maxMessage:
		refuse(http.StatusRequestEntityTooLarge, "too_large", "the body exceeds the maximum message size")
		return
	case json.Unmarshal(body, &req) != nil:
		refuse(http.StatusBadRequest, "bad_request", "the body is not a JSON frame")
		return
	case req.Type != "refresh":
		refuse(http.StatusBadRequest, "unsupported", fmt.Sprintf("frame type %q cannot be posted", truncate(req.Type)))
		return
	}
	user := UserFromContext(r.Context())
	if user == "" {
		refuse(http.StatusForbidden, "forbidden", "an anonymous request cannot refresh a connection")
		return
	}
	ends := ExpiryFromContext(r.Context())
	if !ends.IsZero() && !ends.After(time.Now()) {
		refuse(http.StatusUnauthorized, "session_expired", "the session has expired")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), refreshTimeout)
	defer cancel()
	var ms int64
	if !ends.IsZero() {
		ms = ends.UnixMilli()
	}
	rep, err := b.toConnReply(ctx, control.Request{Op: control.Refresh, Conn: req.Conn, User: user, Expires: ms})
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"type":"refreshed","expires":` + strconv.FormatInt(rep.Expires, 10) + "}\n"))
	case errors.Is(err, ErrInvalidConnID):
		refuse(http.StatusBadRequest, "invalid_conn", err.Error())
	case errors.Is(err, ErrNoSuchConn), errors.Is(err, ErrForbidden):
		// Another user's connection answers as a gone one does: ids are
		// not secrets, and this must not tell which are live. Not logged:
		// a refresh that crosses a reconnect is normal.
		w.Header().Set("Roomcast-Error", "no_such_conn")
		http.Error(w, "no such connection", http.StatusNotFound)
	default:
		b.log.Warn("pubsub: a refresh did not reach its connection", "conn", req.Conn, "err", err)
		w.Header().Set("Roomcast-Error", "unavailable")
		http.Error(w, "the connection's instance did not answer", http.StatusGatewayTimeout)
	}
}
