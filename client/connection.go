package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
)

// errDropped fails a request whose connection ended before its answer; the
// retryable ones go again on the next connection.
var errDropped = errors.New("connection dropped")

// roomsChanged ends an SSE stream whose URL no longer names the client's
// rooms; the next one starts at once.
var roomsChanged = &closed{code: 1000, reason: "rooms changed"}

// connectAndServe makes one connection and reads it until it ends. first,
// if not nil, gets the outcome of the connection attempt.
func (c *Client) connectAndServe(first chan<- error) (end *closed, opened bool) {
	tr, err := c.connect()
	if err == nil {
		err = c.welcome(tr)
	}
	if err != nil {
		end = c.refused(err)
		if first != nil { // Dial reports the first attempt, and the client ends
			if fe := c.finalError(end); fe != nil {
				first <- fe
			} else {
				first <- fmt.Errorf("roomcast: cannot connect to %s: %w", c.url().Redacted(), err)
			}
			c.cancel()
		}
		return end, false
	}
	if first != nil {
		first <- nil
	}
	end = c.serve(tr)
	tr.close(end == roomsChanged)
	c.dropped()
	return end, true
}

// connect dials the transport in use: WebSocket, falling back to SSE when
// allowed and the server is reachable (PROTOCOL.md §7).
func (c *Client) connect() (transport, error) {
	c.mu.Lock()
	mode, base := c.mode, c.urls[c.base]
	c.mu.Unlock()
	if mode == SSE {
		return c.dialSSE(base)
	}
	t, err := dialWS(c.ctx, withQuery(base, url.Values{"protocol": {"1"}}), &c.o)
	if err == nil {
		c.mu.Lock()
		c.wsWorked = true
		c.mu.Unlock()
		return t, nil
	}
	if c.ctx.Err() != nil {
		return nil, err
	}
	// Why did it fail? The upgrade's own answer may come from a proxy that
	// blocks upgrades; HEAD tells the host's refusal, a server that is down,
	// and a server that answers (as the browser client decides).
	r := probe(c.ctx, withQuery(base, url.Values{"protocol": {"1"}}), &c.o)
	switch {
	case r.status == 0:
		return nil, err
	case r.status >= 300:
		return nil, r
	}
	c.mu.Lock()
	fallback := c.o.Transport == Auto && !c.wsWorked
	if fallback {
		c.mode = SSE
	}
	c.mu.Unlock()
	if !fallback {
		return nil, &closed{code: 1006, reason: "WebSocket failed though the server answers: " + err.Error()}
	}
	c.log.Warn("roomcast: WebSocket does not open but the server answers; using SSE", "url", base.Redacted(), "err", err)
	return c.dialSSE(base)
}

// dialSSE opens a stream whose URL names the client's rooms. Its resume
// cursor is the last position received, or further back for a room still
// catching up from a caller's last id (what is delivered twice is dropped
// by handle).
func (c *Client) dialSSE(base *url.URL) (transport, error) {
	c.mu.Lock()
	rooms := c.roomSet()
	cursor := c.lastID
	for _, r := range c.rooms {
		if r.behind && isPosition(r.lastID) && (!isPosition(cursor) || positionLess(r.lastID, cursor)) {
			cursor = r.lastID
		}
	}
	c.rebuild = false
	c.mu.Unlock()
	t, err := dialSSE(c.ctx, withQuery(base, sseQuery(rooms)), base, &c.o, cursor, &c.lastID)
	if err != nil {
		return nil, err
	}
	t.rooms = rooms
	return t, nil
}

// welcome reads the connection's first frame, then makes it the client's:
// over WebSocket it sends every room's subscription with its last id; an
// SSE stream whose rooms changed while it was being made is replaced.
func (c *Client) welcome(tr transport) error {
	p, err := tr.read()
	if err != nil {
		tr.close(false)
		return err
	}
	var f frame
	if json.Unmarshal(p, &f) != nil || f.Type != "welcome" {
		tr.close(false)
		return &closed{code: 1002, reason: "the server's first frame is not a welcome"}
	}
	c.mu.Lock()
	c.tr, c.conn, c.user = tr, f.Conn, f.User
	var resubscribe []out
	if s, ok := tr.(*sse); ok {
		s.conn = f.Conn
		if !maps.Equal(c.roomSet(), s.rooms) {
			c.rebuild = true // serve replaces the stream at once
		}
	} else {
		for name, r := range c.rooms {
			resubscribe = append(resubscribe, out{Type: "subscribe", Room: name, LastID: r.lastID, Presence: r.presence})
		}
	}
	close(c.open)
	c.mu.Unlock()
	for _, f := range resubscribe {
		if err := c.write(c.ctx, tr, f); err != nil {
			tr.close(false)
			c.dropped()
			return err
		}
	}
	return nil
}

// serve reads frames until the connection ends.
func (c *Client) serve(tr transport) *closed {
	for {
		c.mu.Lock()
		rebuild := c.rebuild
		c.mu.Unlock()
		if rebuild { // the stream's URL no longer names its rooms: a new one
			return roomsChanged
		}
		p, err := tr.read()
		if err != nil {
			c.mu.Lock()
			rebuild := c.rebuild
			c.mu.Unlock()
			if rebuild {
				return roomsChanged
			}
			if ce, ok := err.(*closed); ok {
				return ce
			}
			return &closed{code: 1006, reason: err.Error()}
		}
		var f frame
		if err := json.Unmarshal(p, &f); err != nil {
			c.log.Warn("roomcast: a server frame is not JSON", "err", err)
			continue
		}
		if f.Type == "close" { // SSE: why the stream ends
			return &closed{code: f.closeCode(), reason: f.Reason}
		}
		c.handle(tr, &f)
	}
}

// dropped marks the connection gone: requests waiting for answers fail
// with errDropped (the retryable ones wait for the next connection).
func (c *Client) dropped() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tr, c.conn = nil, ""
	c.open = make(chan struct{})
	c.failPending(errDropped)
}

// refused turns a failed connection attempt into how it ended. A room the
// server refuses in an SSE stream's URL is dropped (its subscribers learn
// why) and the others are connected again.
func (c *Client) refused(err error) *closed {
	r, ok := err.(*refusal)
	if !ok {
		if ce, ok := err.(*closed); ok {
			return ce
		}
		return &closed{code: 1006, reason: err.Error()}
	}
	if r.status == 0 {
		return &closed{code: 1006, reason: "unreachable"}
	}
	if r.code == "" && (r.status == 400 || r.status == 403) && c.transportMode() == SSE {
		r = probe(c.ctx, c.sseURLForProbe(), &c.o) // the stream's 400/403 may not name the room; HEAD does
	}
	what := "HTTP " + strconv.Itoa(r.status) + " " + r.code
	switch {
	case r.room != "":
		c.dropRoom(r.room, &Error{Code: cmpOr(r.code, "forbidden"), Message: "the server refused the room", Room: r.room})
		return &closed{code: 1006, reason: "room " + r.room + " refused", status: r.status}
	case r.code == "too_many_rooms": // the rooms added last do not fit
		c.mu.Lock()
		var waiting []string
		for name, rm := range c.rooms {
			if !rm.ok {
				waiting = append(waiting, name)
			}
		}
		c.mu.Unlock()
		for _, name := range waiting {
			c.dropRoom(name, &Error{Code: "too_many_rooms", Message: "the connection is at its room limit", Room: name})
		}
		return &closed{code: 1006, reason: what, status: r.status}
	case r.code == "invalid_id":
		c.mu.Lock()
		c.lastID = ""
		subs := c.allSubs()
		for _, rm := range c.rooms {
			rm.lastID, rm.behind = "", false
		}
		c.mu.Unlock()
		for _, s := range subs {
			s.messages.push(Message{}, ErrTruncated)
		}
		return &closed{code: 1006, reason: "invalid resume position"}
	case isFinalRefusal(r):
		code := 1008
		if r.code == "session_expired" {
			code = 4005
		}
		return &closed{code: code, reason: cmpOr(r.code, http.StatusText(r.status)), status: r.status}
	}
	return &closed{code: 1006, reason: what, status: r.status}
}

func (c *Client) transportMode() Transport { c.mu.Lock(); defer c.mu.Unlock(); return c.mode }

// sseURLForProbe is the stream's URL, for the HEAD probe: the same query.
func (c *Client) sseURLForProbe() *url.URL {
	c.mu.Lock()
	defer c.mu.Unlock()
	return withQuery(c.urls[c.base], sseQuery(c.roomSet()))
}

// roomSet is the client's rooms and whether each wants presence: what an
// SSE stream's URL names. c.mu is held.
func (c *Client) roomSet() map[string]bool {
	rooms := make(map[string]bool, len(c.rooms))
	for name, r := range c.rooms {
		rooms[name] = r.presence
	}
	return rooms
}

// sseQuery is the query of a stream for rooms (PROTOCOL.md §1).
func sseQuery(rooms map[string]bool) url.Values {
	q := url.Values{"protocol": {"1"}}
	for name, presence := range rooms {
		q.Add("room", name)
		if presence {
			q.Add("presence", name)
		}
	}
	return q
}

func (c *Client) allSubs() []*Subscription {
	var subs []*Subscription
	for _, r := range c.rooms {
		subs = append(subs, r.subs...)
	}
	return subs
}

// dropRoom forgets a room: its subscriptions end with err, which wraps
// ErrUnsubscribed.
func (c *Client) dropRoom(name string, err error) {
	c.mu.Lock()
	r := c.rooms[name]
	delete(c.rooms, name)
	c.mu.Unlock()
	if r == nil {
		return
	}
	for _, w := range r.waiters {
		w <- err
	}
	if !errors.Is(err, ErrUnsubscribed) {
		err = fmt.Errorf("%w: %w", ErrUnsubscribed, err)
	}
	for _, s := range r.subs {
		s.end(err)
	}
}

// write encodes and sends one frame, over SSE for this connection.
func (c *Client) write(ctx context.Context, tr transport, f out) error {
	if s, ok := tr.(*sse); ok {
		f.Conn = s.conn
	}
	p, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return tr.send(ctx, p)
}
