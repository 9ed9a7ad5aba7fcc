// Package stack looks at the http.ResponseWriter a host's middleware hands
// to the live handler: which wrappers it went through, and whether the
// connection's Hijack and Flush are still reachable through them.
//
// Middleware wraps the ResponseWriter to log, compress or time out a
// request. A wrapper that has no Unwrap method and does not forward Hijack
// or Flush itself hides the connection: WebSocket cannot upgrade and a
// Server-Sent Events stream cannot be flushed. Finding that out before the
// response starts is what lets the handler fail with a clear HTTP error and
// a log line naming the wrapper, instead of a 101 followed by silence.
package stack

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
)

// Chain is what Inspect found, from the outermost writer inwards.
//
// What the connection allows is decided by the end of the chain: the last
// writer Unwrap reaches. When that is net/http's own writer, the wrappers
// in front of it reach it too (http.ResponseController walks the same
// chain). When it is a wrapper without Unwrap, only its own methods count:
// the wrappers in front of it (gin's writer, compressing writers) have
// Hijack and Flush methods, but those only call into the wrapper behind
// them, which cannot.
type Chain struct {
	// CanHijack reports whether the connection can be taken over: the end
	// is net/http's HTTP/1 writer, or a wrapper with a Hijack method.
	CanHijack bool
	// CanFlush reports whether a response can be streamed: the end is
	// net/http's own writer, or a wrapper with Flush (or FlushError).
	CanFlush bool

	writers []http.ResponseWriter // outermost first
	netHTTP bool                  // the end is net/http's own writer
}

type unwrapper interface{ Unwrap() http.ResponseWriter }

type flushErrorer interface{ FlushError() error }

// net/http's own writers: HTTP/1 and the bundled HTTP/2 server's.
const (
	http1Writer = "*http.response"
	http2Writer = "*http.http2responseWriter"
)

// Inspect walks w's Unwrap chain, as http.ResponseController does.
func Inspect(w http.ResponseWriter) Chain {
	var c Chain
	for depth := 0; w != nil && depth < 32; depth++ {
		c.writers = append(c.writers, w)
		u, ok := w.(unwrapper)
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	if len(c.writers) == 0 {
		return c
	}
	end := c.writers[len(c.writers)-1]
	switch reflect.TypeOf(end).String() {
	case http1Writer:
		c.netHTTP, c.CanHijack, c.CanFlush = true, true, true
	case http2Writer:
		c.netHTTP, c.CanFlush = true, true
	default:
		_, c.CanHijack = end.(http.Hijacker)
		switch end.(type) {
		case http.Flusher, flushErrorer:
			c.CanFlush = true
		}
	}
	return c
}

// Bare reports whether the writer is net/http's own, with no middleware
// wrapper in front of it.
func (c Chain) Bare() bool { return len(c.writers) == 1 && c.netHTTP }

// CloseNotify returns a channel that receives when the client's connection
// (HTTP/1) or stream (HTTP/2) goes away, or nil when the end of the chain
// cannot tell. It exists for the one case the request's context cannot
// serve: a middleware deadline (chi's Timeout) has already ended that
// context, and the stream lives on. http.CloseNotifier is deprecated in
// favour of the request context for exactly the other cases. It must be
// called while the handler is running.
func (c Chain) CloseNotify() <-chan bool {
	if len(c.writers) == 0 {
		return nil
	}
	if n, ok := c.writers[len(c.writers)-1].(http.CloseNotifier); ok { //nolint:staticcheck
		return n.CloseNotify()
	}
	return nil
}

// Layers returns the writers' Go types, outermost first.
func (c Chain) Layers() []string {
	out := make([]string, len(c.writers))
	for i, w := range c.writers {
		out[i] = fmt.Sprintf("%T", w)
	}
	return out
}

// String lists the layers: "*main.logWriter → *http.response".
func (c Chain) String() string { return strings.Join(c.Layers(), " → ") }

// Problem explains why a transport cannot work through c, and how to fix
// it: cause and fix are empty when it can. WebSocket needs to take the
// connection over; Server-Sent Events need to flush (or, over HTTP/1.x, to
// take the connection over).
func (c Chain) Problem(websocket bool) (cause, fix string) {
	need := "Flush"
	switch {
	case websocket && c.CanHijack, !websocket && (c.CanFlush || c.CanHijack):
		return "", ""
	case websocket:
		need = "Hijack"
	}
	layers := c.Layers()
	for _, l := range layers {
		if hint, ok := known[l]; ok {
			return fmt.Sprintf("%s (%s) cannot %s", hint.what, l, strings.ToLower(need)), hint.fix
		}
	}
	end := layers[len(layers)-1]
	if c.netHTTP {
		return "the request is not HTTP/1.x, and a WebSocket upgrade needs HTTP/1.1", "let clients connect over HTTP/1.1 for WebSocket (browsers do); SSE works over HTTP/2"
	}
	return fmt.Sprintf("the ResponseWriter wrapper %s has no Unwrap method and no %s of its own, so the connection behind it cannot be reached", end, need),
		fmt.Sprintf("add `func (w %s) Unwrap() http.ResponseWriter { return w.ResponseWriter }` to that middleware's writer, or mount the live path outside that middleware", end)
}

// HijackFailed explains a Hijack that the chain offered and then refused
// (or panicked in): some wrapper behind the end of the chain hides the
// connection.
func (c Chain) HijackFailed(err error) (cause, fix string) {
	return fmt.Sprintf("taking the connection over through %s failed: %v", c, err),
		"a ResponseWriter wrapper between the server and this handler hides the connection: give it an Unwrap method, or mount the live path outside that middleware"
}

// Head returns the response head for a connection taken over with Hijack:
// the status line and the headers the host's middleware and the handler
// set, minus those that describe a body framing or encoding the connection
// will not use (a compressing middleware may have announced gzip before it
// was bypassed). The caller adds what its protocol needs.
func Head(proto string, code int, h http.Header) []byte {
	h = h.Clone()
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Content-Encoding", "Trailer"} {
		h.Del(k)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d %s\r\n", proto, code, http.StatusText(code))
	_ = h.Write(&b)
	b.WriteString("\r\n")
	return []byte(b.String())
}

// known are writers from widely used packages that can never stream.
var known = map[string]struct{ what, fix string }{
	"*http.timeoutWriter": {
		"http.TimeoutHandler buffers the whole response until the handler returns, and",
		"mount the live path outside http.TimeoutHandler (a live connection outlives any request timeout)",
	},
}
