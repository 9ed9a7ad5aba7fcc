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
	"unicode/utf8"

	"github.com/roomcast/pubsub/internal/control"
	"github.com/roomcast/pubsub/internal/wire"
)

// postTimeout bounds a POSTed frame: the connection may be on another
// instance, and a publish may wait for the store (5 s).
const postTimeout = 8 * time.Second

// servePost answers a POST to the mount path carrying one client frame
// and "conn", the connection it acts on (PROTOCOL.md §1 and §11): how a
// client whose transport cannot send (an EventSource) subscribes,
// publishes, calls... and how any client refreshes its session. The
// request has just passed the host's middleware (its cookie or session
// check); the frame is handled on whichever instance holds the connection,
// if it is the same user's, and its answers come on the connection.
//
// Cross-site requests cannot make one: the body must be JSON with
// Content-Type application/json (a form or a no-CORS fetch cannot send
// that without a preflight), and a browser Origin must pass the same rule
// as a connection's.
func (b *Broker) servePost(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	refuse := func(status int, code, msg string) {
		b.logRefused(r, "post", fmt.Sprintf("a POSTed frame (%s): %s", code, msg))
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
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(b.cfg.maxMessage)+1))
	var f wire.ClientFrame
	switch {
	case err != nil:
		refuse(http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	case len(body) > b.cfg.maxMessage:
		refuse(http.StatusRequestEntityTooLarge, "too_large", "the body exceeds the maximum message size")
		return
	case !utf8.Valid(body) || json.Unmarshal(body, &f) != nil || f.Type == "":
		refuse(http.StatusBadRequest, "bad_request", "the body is not a JSON frame")
		return
	}
	user := UserFromContext(r.Context())
	if user == "" {
		refuse(http.StatusForbidden, "forbidden", "an anonymous request cannot act on a connection")
		return
	}
	ends := ExpiryFromContext(r.Context())
	if !ends.IsZero() && !ends.After(time.Now()) {
		refuse(http.StatusUnauthorized, "session_expired", "the session has expired")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), postTimeout)
	defer cancel()
	req := control.Request{Op: control.Frame, Conn: f.Conn, User: user, Frame: body}
	if f.Type == "refresh" {
		req = control.Request{Op: control.Refresh, Conn: f.Conn, User: user}
		if !ends.IsZero() {
			req.Expires = ends.UnixMilli()
		}
	}
	rep, err := b.toConnReply(ctx, req)
	switch {
	case err == nil && f.Type == "refresh":
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"type":"refreshed","expires":` + strconv.FormatInt(rep.Expires, 10) + "}\n"))
	case err == nil: // its answers are on the connection
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"type":"accepted"}` + "\n"))
	case errors.Is(err, ErrInvalidConnID):
		refuse(http.StatusBadRequest, "invalid_conn", err.Error())
	case errors.Is(err, errPostBusy):
		refuse(http.StatusTooManyRequests, "busy", "the connection is handling another frame: POST them one at a time")
	case errors.Is(err, ErrForbidden):
		refuse(http.StatusForbidden, "forbidden", "the connection is another user's")
	case errors.Is(err, ErrNoSuchConn):
		// Not logged: a POST that crosses a reconnect is normal.
		w.Header().Set("Roomcast-Error", "no_such_conn")
		http.Error(w, "no such connection", http.StatusNotFound)
	default:
		b.log.Warn("pubsub: a POSTed frame did not reach its connection", "conn", f.Conn, "type", f.Type, "err", err)
		w.Header().Set("Roomcast-Error", "unavailable")
		http.Error(w, "the connection's instance did not answer", http.StatusGatewayTimeout)
	}
}
