package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

const (
	writeTimeout = 10 * time.Second // every write, and every POST, has this deadline
	dialTimeout  = 10 * time.Second // from the request to the welcome frame
	pingEvery    = 30 * time.Second // WebSocket: a route cut silently is noticed within pingEvery+writeTimeout
	sseIdle      = 45 * time.Second // SSE: three keep-alives missed
	maxFrame     = 16 << 20         // a history answer holds up to 100 messages of 64 KiB
)

// transport is one connection: a WebSocket, or an SSE stream with its POSTs.
type transport interface {
	// send sends one client frame (over SSE: POSTs it for conn).
	send(ctx context.Context, f []byte) error
	// read returns the next frame; at the end, the close code and reason.
	read() ([]byte, error)
	// close ends it: with a close frame if graceful (bounded by
	// closeTimeout), at once otherwise (it already failed).
	close(graceful bool)
	name() string
}

const closeTimeout = 500 * time.Millisecond

// closed is how a connection ended, or why one could not be made.
type closed struct {
	code   int
	reason string
	status int // an HTTP refusal's status
}

func (c *closed) Error() string { return fmt.Sprintf("closed %d %s", c.code, c.reason) }

// isPosition reports whether id is a store position (PROTOCOL.md §2: in a
// room with history, a decimal number, increasing in store order).
func isPosition(id string) bool {
	_, err := strconv.ParseUint(id, 10, 64)
	return err == nil
}

// positionLess reports a < b for two store positions.
func positionLess(a, b string) bool {
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	return x < y
}

// refusal is an HTTP answer instead of a connection.
type refusal struct {
	status int
	code   string // Roomcast-Error
	room   string // Roomcast-Room
}

func (r *refusal) Error() string { return fmt.Sprintf("HTTP %d %s", r.status, r.code) }

func refusalOf(resp *http.Response) *refusal {
	room, _ := url.QueryUnescape(resp.Header.Get("Roomcast-Room"))
	return &refusal{status: resp.StatusCode, code: resp.Header.Get("Roomcast-Error"), room: room}
}

// ws is a WebSocket connection. Server frames may be joined by "\n" in one
// message (PROTOCOL.md §3): read hands them out one by one.
type ws struct {
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	rest   []byte
	wg     sync.WaitGroup
}

func dialWS(ctx context.Context, u *url.URL, o *Options) (*ws, error) {
	wu := *u
	wu.Scheme = map[string]string{"https": "wss", "http": "ws"}[u.Scheme]
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, wu.String(), &websocket.DialOptions{HTTPClient: o.HTTPClient, HTTPHeader: o.Header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, refusalOf(resp)
		}
		return nil, err
	}
	c.SetReadLimit(maxFrame)
	t := &ws{c: c}
	t.ctx, t.cancel = context.WithCancel(ctx)
	t.wg.Go(t.pinger)
	return t, nil
}

// pinger notices a route cut silently: the server's pings keep the
// server's side honest, ours keep this side's.
func (t *ws) pinger() {
	tick := time.NewTicker(pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(t.ctx, writeTimeout)
			err := t.c.Ping(ctx)
			cancel()
			if err != nil {
				t.cancel() // read returns
				return
			}
		}
	}
}

func (t *ws) name() string { return "websocket" }

func (t *ws) send(ctx context.Context, f []byte) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return t.c.Write(ctx, websocket.MessageText, f)
}

func (t *ws) read() ([]byte, error) {
	for len(t.rest) == 0 {
		typ, p, err := t.c.Read(t.ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return nil, &closed{code: int(ce.Code), reason: ce.Reason}
			}
			return nil, &closed{code: 1006, reason: err.Error()}
		}
		if typ == websocket.MessageText {
			t.rest = p
		}
	}
	line, rest, _ := bytes.Cut(t.rest, []byte("\n"))
	t.rest = rest
	return line, nil
}

func (t *ws) close(graceful bool) {
	if graceful {
		// Close waits up to 5 s for the server's answer; a cut route must
		// not hold Close that long.
		done := make(chan struct{})
		go func() {
			_ = t.c.Close(websocket.StatusNormalClosure, "")
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeTimeout):
			t.cancel() // the reader's context: coder/websocket then drops the connection, and Close returns
			<-done
		}
	} else {
		_ = t.c.CloseNow()
	}
	t.cancel()
	t.wg.Wait()
}

// sse is an SSE stream; the frames the client sends are POSTed to the same
// URL for its connection, one at a time (PROTOCOL.md §5).
type sse struct {
	o      *Options
	post   *url.URL // the mount's URL, without the stream's query
	body   io.ReadCloser
	r      *bufio.Reader
	cancel context.CancelFunc
	idle   *time.Timer
	lastID *string         // the last "id:" of a dispatched event: the client's resume cursor
	conn   string          // set from the welcome frame
	posts  chan struct{}   // one POST at a time: the server refuses a second with 429
	rooms  map[string]bool // the rooms (and their presence) its URL names
}

func dialSSE(ctx context.Context, u, post *url.URL, o *Options, cursor string, lastID *string) (*sse, error) {
	sctx, cancel := context.WithCancel(ctx)
	req, err := newRequest(sctx, o, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if cursor != "" {
		req.Header.Set("Last-Event-ID", cursor)
	}
	// The response head is bounded like a dial; the stream then by sseIdle.
	headTimer := time.AfterFunc(dialTimeout, cancel)
	resp, err := o.HTTPClient.Do(req)
	headTimer.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		r := refusalOf(resp)
		resp.Body.Close()
		cancel()
		return nil, r
	}
	t := &sse{o: o, post: post, body: resp.Body, r: bufio.NewReaderSize(resp.Body, 4096), cancel: cancel, lastID: lastID, posts: make(chan struct{}, 1)}
	t.idle = time.AfterFunc(sseIdle, cancel)
	return t, nil
}

func (t *sse) name() string { return "sse" }

// read returns the data of the next event; comments and retry lines only
// prove the stream alive.
func (t *sse) read() ([]byte, error) {
	var data []byte
	id, hasID := "", false
	for {
		line, err := t.line()
		if err != nil {
			return nil, &closed{code: 1006, reason: "stream ended: " + err.Error()}
		}
		t.idle.Reset(sseIdle)
		switch {
		case len(line) == 0:
			if data != nil {
				// The cursor moves with the event it ends, never back: a
				// replay of older positions (a subscription with a last
				// id) must not make the next stream resume every room
				// from there.
				if hasID && (!isPosition(*t.lastID) || positionLess(*t.lastID, id)) {
					*t.lastID = id
				}
				return data, nil
			}
		case bytes.HasPrefix(line, []byte("data:")):
			// Appended, so copied: line aliases the reader's buffer, which
			// the next line (the event's blank end) may overwrite.
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(line[5:], []byte(" "))...)
		case bytes.HasPrefix(line, []byte("id:")):
			id, hasID = string(bytes.TrimPrefix(line[3:], []byte(" "))), true
		}
	}
}

func (t *sse) line() ([]byte, error) {
	var long []byte
	for {
		p, err := t.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(long)+len(p) > maxFrame {
				return nil, errors.New("event too large")
			}
			long = append(long, p...)
			continue
		}
		if err != nil {
			return nil, err
		}
		if long != nil {
			p = append(long, p...)
		}
		return bytes.TrimRight(p, "\r\n"), nil
	}
}

// send POSTs f for this stream's connection. The server answers 202 once it
// handled the frame; the frame's answer comes on the stream. A POST lost on
// the network may or may not have acted: the stream is ended, so that the
// next one states the client's rooms again.
func (t *sse) send(ctx context.Context, f []byte) error {
	select {
	case t.posts <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.posts }()
	resp, err := postJSON(ctx, t.o, t.post, f)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t.cancel()
		return &closed{code: 1006, reason: "POST failed: " + err.Error()}
	}
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusNotFound: // the connection is gone: the stream ends soon
		t.cancel()
		return &closed{code: 1006, reason: "connection gone"}
	default:
		r := refusalOf(resp)
		code := r.code
		if code == "" {
			code = map[int]string{401: "forbidden", 403: "forbidden", 413: "too_large", 429: "busy"}[r.status]
		}
		return &Error{Code: cmpOr(code, "internal"), Message: fmt.Sprintf("the server refused the frame (HTTP %d)", r.status)}
	}
}

// newRequest is a request to u with the caller's headers (its session).
func newRequest(ctx context.Context, o *Options, method string, u *url.URL, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header = o.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	return req, nil
}

// postJSON POSTs a JSON body to u (a frame, a refresh) within writeTimeout
// and returns the answer, its body read and closed.
func postJSON(ctx context.Context, o *Options, u *url.URL, body []byte) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	req, err := newRequest(ctx, o, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp, nil
}

func (t *sse) close(bool) {
	t.idle.Stop()
	t.cancel()
	t.body.Close()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// probe asks with HEAD what a connection to u would get (PROTOCOL.md §1):
// the host's 401/403, a refused room, or 204 when only the transport failed.
func probe(ctx context.Context, u *url.URL, o *Options) *refusal {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	req, err := newRequest(ctx, o, http.MethodHead, u, nil)
	if err != nil {
		return &refusal{}
	}
	resp, err := o.HTTPClient.Do(req)
	if err != nil {
		return &refusal{}
	}
	resp.Body.Close()
	return refusalOf(resp)
}

// withQuery returns u with the parameters appended to its own query, which
// is kept as the caller wrote it.
func withQuery(u *url.URL, params url.Values) *url.URL {
	v := *u
	if q := params.Encode(); q != "" {
		if v.RawQuery != "" {
			v.RawQuery += "&"
		}
		v.RawQuery += q
	}
	return &v
}

func isFinalRefusal(r *refusal) bool {
	return r.status == 401 || r.status == 403 || r.code == "misconfigured" || r.code == "unsupported_protocol"
}
