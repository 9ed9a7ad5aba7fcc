package main

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/olahol/melody"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/embedded"
)

type clusterFlags struct {
	name, routes  string
	port, monitor int
}

func newRoomcast(cl clusterFlags, extra ...pubsub.Option) *roomcast {
	opts := append([]pubsub.Option{pubsub.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, extra...)
	if cl.port != 0 {
		eo := embedded.Options{Name: cl.name, Host: "127.0.0.1", Port: -1,
			Cluster: &embedded.Cluster{Name: "bench", Host: "127.0.0.1", Port: cl.port}}
		if cl.routes != "" {
			eo.Cluster.Routes = strings.Split(cl.routes, ",")
		}
		if cl.monitor != 0 {
			eo.Configure = func(o *server.Options) { o.HTTPHost, o.HTTPPort = "127.0.0.1", cl.monitor }
		}
		opts = append(opts, pubsub.WithEmbedded(eo))
	}
	ps, err := pubsub.New(opts...)
	if err != nil {
		log.Fatal(err)
	}
	return &roomcast{ps: ps}
}

func withUser(ctx context.Context, u string) context.Context { return pubsub.ContextWithUser(ctx, u) }

// gorilla is the classic hub of gorilla/websocket's chat example, with rooms
// and users added: one hub goroutine owns the maps, each client has a
// buffered send channel (256) drained by its own writer goroutine, which
// joins queued messages into one frame, and a reader goroutine.
type gorilla struct {
	register   chan *gclient
	unregister chan *gclient
	broadcast  chan gmsg
	direct     chan gmsg
}

type gmsg struct {
	target string
	data   []byte
}

type gclient struct {
	hub   *gorilla
	conn  *websocket.Conn
	send  chan []byte
	rooms []string
	user  string
}

const (
	gWriteWait  = 10 * time.Second
	gPongWait   = 60 * time.Second
	gPingPeriod = gPongWait * 9 / 10
)

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}

func newGorilla() *gorilla {
	h := &gorilla{register: make(chan *gclient), unregister: make(chan *gclient), broadcast: make(chan gmsg, 256), direct: make(chan gmsg, 256)}
	go h.run()
	return h
}

func (h *gorilla) run() {
	rooms := map[string]map[*gclient]bool{}
	users := map[string]map[*gclient]bool{}
	add := func(m map[string]map[*gclient]bool, k string, c *gclient) {
		if m[k] == nil {
			m[k] = map[*gclient]bool{}
		}
		m[k][c] = true
	}
	drop := func(c *gclient) {
		for _, r := range c.rooms {
			delete(rooms[r], c)
		}
		if c.user != "" {
			delete(users[c.user], c)
		}
		close(c.send)
	}
	deliver := func(set map[*gclient]bool, data []byte) {
		for c := range set {
			select {
			case c.send <- data:
			default:
				drop(c)
			}
		}
	}
	for {
		select {
		case c := <-h.register:
			for _, r := range c.rooms {
				add(rooms, r, c)
			}
			if c.user != "" {
				add(users, c.user, c)
			}
		case c := <-h.unregister:
			if rooms[c.rooms[0]][c] || users[c.user][c] {
				drop(c)
			}
		case m := <-h.broadcast:
			deliver(rooms[m.target], m.data)
		case m := <-h.direct:
			deliver(users[m.target], m.data)
		}
	}
}

func (h *gorilla) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		rooms := r.URL.Query()["room"]
		if len(rooms) == 0 {
			rooms = []string{""}
		}
		c := &gclient{hub: h, conn: conn, send: make(chan []byte, 256), rooms: slices.Clone(rooms), user: r.URL.Query().Get("user")}
		h.register <- c
		go c.writePump()
		go c.readPump()
	})
}

func (h *gorilla) publish(room string, msg []byte)  { h.broadcast <- gmsg{room, msg} }
func (h *gorilla) sendUser(user string, msg []byte) { h.direct <- gmsg{user, msg} }

func (c *gclient) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(512)
	c.conn.SetReadDeadline(time.Now().Add(gPongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(gPongWait)); return nil })
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return
		}
	}
}

func (c *gclient) writePump() {
	ticker := time.NewTicker(gPingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	newline := []byte{'\n'}
	for {
		select {
		case message, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(gWriteWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(message)
			n := len(c.send)
			for range n {
				w.Write(newline)
				w.Write(<-c.send)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(gWriteWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

// melodyImpl is olahol/melody used as its README shows: sessions carry keys,
// and targeted sends are BroadcastFilter over all sessions.
type melodyImpl struct{ m *melody.Melody }

func newMelody() *melodyImpl {
	m := melody.New()
	m.Config.MaxMessageSize = 512
	return &melodyImpl{m: m}
}

func (mi *melodyImpl) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		_ = mi.m.HandleRequestWithKeys(w, r, map[string]any{"rooms": q["room"], "user": q.Get("user")})
	})
}

func (mi *melodyImpl) publish(room string, msg []byte) {
	_ = mi.m.BroadcastFilter(msg, func(s *melody.Session) bool {
		rooms, _ := s.Keys["rooms"].([]string)
		return slices.Contains(rooms, room)
	})
}

func (mi *melodyImpl) sendUser(user string, msg []byte) {
	_ = mi.m.BroadcastFilter(msg, func(s *melody.Session) bool { return s.Keys["user"] == user })
}
