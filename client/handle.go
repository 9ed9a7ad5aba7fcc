package client

import (
	"encoding/json"
	"net/http"
	"time"
)

// handle acts on one server frame. It runs on the reader and never blocks:
// iterators have bounded queues, and what must be sent goes to the
// background worker.
func (c *Client) handle(tr transport, f *frame) {
	switch f.Type {
	case "message":
		c.mu.Lock()
		r := c.rooms[f.Room]
		if r == nil { // left already: a late one
			c.mu.Unlock()
			return
		}
		// Each stored id once: a replay from an older position (an SSE
		// stream resuming from a room still catching up) repeats some.
		if isPosition(f.ID) && isPosition(r.lastID) && !positionLess(r.lastID, f.ID) {
			c.mu.Unlock()
			return
		}
		r.lastID = f.ID
		if r.behind && (!isPosition(r.catchUp) || !positionLess(f.ID, r.catchUp)) {
			r.behind = false
		}
		subs := r.subs
		for _, s := range subs {
			s.lastID = f.ID
		}
		c.mu.Unlock()
		if len(subs) == 0 { // a room the server made ours
			c.direct.push(f.message(), nil)
		}
		for _, s := range subs {
			s.messages.push(f.message(), nil)
		}
	case "direct":
		c.direct.push(f.message(), nil)
	case "subscribed":
		c.mu.Lock()
		r := c.rooms[f.Room]
		if r == nil && f.By == "server" { // ours from now on, resumed like any (an SSE URL names it from the next stream)
			r = &room{}
			c.rooms[f.Room] = r
			if s, ok := tr.(*sse); ok {
				s.rooms[f.Room] = false
			}
		}
		var waiters []chan error
		if r != nil {
			r.ok = true
			waiters, r.waiters = r.waiters, nil
		}
		c.mu.Unlock()
		for _, w := range waiters {
			w <- nil
		}
	case "unsubscribed":
		if c.answer(f) {
			return
		}
		c.mu.Lock()
		r := c.rooms[f.Room]
		pending := r != nil && !r.ok // about an older subscription: the new one stands
		if s, ok := tr.(*sse); ok && f.By == "server" && !pending {
			delete(s.rooms, f.Room)
		}
		c.mu.Unlock()
		if f.By == "server" && !pending {
			c.dropRoom(f.Room, ErrUnsubscribed)
		}
	case "truncated":
		for _, s := range c.subsOf(f.Room) {
			s.messages.push(Message{}, truncatedIn(f.Room))
		}
	case "presence", "join", "leave":
		if c.answer(f) {
			return
		}
		ev := PresenceEvent{Type: f.Type, Room: f.Room, User: f.User, Count: f.Count}
		if f.Type == "presence" {
			ev.Snapshot = f.presence()
		}
		for _, s := range c.subsOf(f.Room) {
			if s.presence != nil {
				s.presence.push(ev, nil)
			}
		}
	case "inbox":
		c.inbox.push(InboxMessage{ID: f.ID, Time: f.Time, Data: f.Data}, nil)
	case "inbox_truncated":
		c.inbox.push(InboxMessage{}, ErrInboxTruncated)
	case "refresh":
		c.refresh(f.Expires, 500*time.Millisecond)
	case "error":
		c.handleError(tr, f)
	default: // published, history, reply, acked, pong: answers
		c.answer(f)
	}
}

func (c *Client) subsOf(name string) []*Subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.rooms[name]; r != nil {
		return r.subs
	}
	return nil
}

// handleError gives an error frame to the request that caused it, else to
// a Subscribe waiting for its room, else to the room's subscriptions (not
// final: "store_failed" to a room's readers), else to the log.
func (c *Client) handleError(tr transport, f *frame) {
	if c.answer(f) {
		return
	}
	e := f.err()
	c.mu.Lock()
	r := c.rooms[f.Room]
	switch {
	case r != nil && (subscribeRefusal(e.Code) || e.Code == "invalid_id" && len(r.waiters) > 0):
		// The room is refused: to a Subscribe waiting for it (its own last
		// id, too, is refused), or on a resubscription; it is no longer ours.
		c.mu.Unlock()
		c.dropRoom(f.Room, e)
		return
	case r != nil && e.Code == "invalid_id" && r.lastID != "": // a position the server cannot use: subscribe afresh
		r.lastID, r.behind = "", false
		subs, name, presence := r.subs, f.Room, r.presence
		c.mu.Unlock()
		for _, s := range subs {
			s.messages.push(Message{}, truncatedIn(name))
		}
		c.background(func() {
			_ = c.write(c.ctx, tr, out{Type: "subscribe", Room: name, Presence: presence})
		})
		return
	}
	var subs []*Subscription
	if r != nil {
		subs = r.subs
	}
	c.mu.Unlock()
	for _, s := range subs {
		s.messages.push(Message{}, e)
	}
	if len(subs) == 0 {
		c.log.Warn("roomcast: the server reported an error", "code", e.Code, "message", e.Message, "room", e.Room)
	}
}

func subscribeRefusal(code string) bool {
	return code == "forbidden" || code == "invalid_room" || code == "too_many_rooms"
}

// background runs f on a goroutine the Client owns, bounded: sends the
// reader must not wait for (acks, refreshes, resubscriptions).
func (c *Client) background(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.ctx.Err() != nil {
		return
	}
	c.jobs.Add(1)
	go func() {
		defer c.jobs.Done()
		f()
	}()
}

// refresh renews the session through the host's middleware (PROTOCOL.md
// §11), retrying what may pass later (the network, a 5xx) until expires.
func (c *Client) refresh(expires int64, delay time.Duration) {
	conn := c.Conn()
	c.background(func() {
		status := c.postRefresh(conn)
		switch {
		case status >= 200 && status < 300, status == http.StatusNotFound:
		case status == 0 || status >= 500:
			if time.Now().Add(delay).UnixMilli() < expires {
				select {
				case <-time.After(delay):
					if c.Conn() == conn {
						c.refresh(expires, 2*delay)
					}
				case <-c.ctx.Done():
				}
			}
		default:
			c.log.Error("roomcast: the server refused to refresh the session; the connection ends at its expiry",
				"status", status, "expires", time.UnixMilli(expires))
		}
	})
}

func (c *Client) postRefresh(conn string) int {
	body, _ := json.Marshal(out{Type: "refresh", Conn: conn})
	resp, err := postJSON(c.ctx, &c.o, c.url(), body)
	if err != nil {
		return 0
	}
	return resp.StatusCode
}
