package pubsub

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/roomcast/pubsub/internal/stack"
	"github.com/roomcast/pubsub/internal/stats"
)

// misconfiguredEvery bounds how often one cause is logged: a page that
// retries must not flood the log.
const misconfiguredEvery = time.Minute

// refuseStack answers a request whose transport cannot work through the
// host's writers, before anything else is written: a clear error instead of
// a 101 followed by silence, or a stream that never flushes.
func (b *Broker) refuseStack(w http.ResponseWriter, r *http.Request, transport string, chain stack.Chain) error {
	cause, fix := chain.Problem(transport == "WebSocket")
	return b.refuse(w, r, transport, chain, cause, fix)
}

// refuse answers 500 misconfigured and logs cause and fix.
func (b *Broker) refuse(w http.ResponseWriter, r *http.Request, transport string, chain stack.Chain, cause, fix string) error {
	w.Header().Set("Roomcast-Error", "misconfigured")
	http.Error(w, "live endpoint misconfigured: its middleware prevents "+transport+" (see the server log)", http.StatusInternalServerError)
	return b.logMisconfigured(r, transport, chain, cause, fix)
}

// errRequestDeadline is Conn.Err of a stream ended at a middleware's
// request deadline because nothing else could tell when its client left.
var errRequestDeadline = errors.New("pubsub: a middleware's request deadline ended the stream")

// logMisconfigured logs a cause at Error, once a minute at most, and
// returns the error for Accept's caller. The log names the host's types;
// the response body never does.
func (b *Broker) logMisconfigured(r *http.Request, transport string, chain stack.Chain, cause, fix string) error {
	b.stats.Deny(stats.DeniedMisconfigured)
	if ok, suppressed := b.logLimit.Allow("stack:" + transport + ":" + chain.String()); ok {
		b.log.Error("pubsub: "+transport+" cannot work behind the middleware on this path",
			"path", r.URL.Path, "cause", cause, "fix", fix, "writers", chain.String(), "suppressed", suppressed)
	}
	return fmt.Errorf("%w: %s: %s", ErrMisconfigured, transport, cause)
}

// sseWorks reports whether an SSE stream can work through chain: flushed
// through it, or, for the broker's own handler over HTTP/1.x, taken over.
// The probe and acceptSSE decide alike.
func sseWorks(chain stack.Chain, r *http.Request, detached bool) bool {
	return chain.CanFlush || detached && r.ProtoMajor == 1 && chain.CanHijack
}

// noteRequestDeadline says, once per broker, that a middleware deadline
// was outlived: the stream works, but the host may want the live path
// outside that middleware.
func (b *Broker) noteRequestDeadline(c *Conn, watched bool) {
	if !b.logLimit.First("request-deadline") {
		return
	}
	if watched {
		b.log.Info("pubsub: the request context of an SSE stream reached a deadline set by middleware (e.g. chi's Timeout); the stream stays open and its client is watched through the connection. Mounting the live path outside that middleware avoids the middleware's own response at the stream's end",
			"conn", c.id)
		return
	}
	b.log.Warn("pubsub: the request context of an SSE stream reached a deadline set by middleware (e.g. chi's Timeout), and the connection cannot tell when its client leaves: streams end at that deadline and clients reconnect. Mount the live path outside that middleware",
		"conn", c.id)
}
