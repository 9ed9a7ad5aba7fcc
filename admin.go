package pubsub

import (
	"context"
	"embed"
	"encoding/json"
	"net/http"
	"time"
)

//go:embed admin/index.html admin/admin.js
var adminFiles embed.FS

// adminEvery is how often the ops page is sent a snapshot.
const adminEvery = time.Second

// adminSnapshot is what the ops page receives every second.
type adminSnapshot struct {
	Instance string    `json:"instance"`
	At       time.Time `json:"at"`
	// Cluster is every instance's Stats, this one's included; Partial
	// says that some instance presence knows of did not answer in time.
	Cluster  []Stats   `json:"cluster"`
	Partial  bool      `json:"partial,omitempty"`
	Room     string    `json:"room,omitempty"`
	Presence *Presence `json:"presence,omitempty"`
	Error    string    `json:"error,omitempty"` // why Presence is missing
}

// AdminHandler serves a live operations page: connections by transport
// and instance, messages/s and deliveries/s as charts, the busiest rooms,
// slow-consumer closes, denials, the presence of a room one types in, and
// every instance of the cluster. It is plain HTML and JavaScript embedded in
// the binary, with no external resources, and it is live over this
// broker's own SSE: the page's stream is a connection (counted in Stats)
// that receives a snapshot every second by Conn.Send.
//
// Mount it where the host wants and behind the host's own admin
// authorization; it shows room names and user ids:
//
//	mux.Handle("/admin", requireAdmin(ps.AdminHandler()))
//
// It answers any path, so it needs no prefix stripping: the page loads its
// script and stream by query (?asset=admin.js, ?stream=1&presence=ROOM).
func (b *Broker) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		switch {
		case q.Has("stream"):
			b.serveAdminStream(w, r, q.Get("presence"))
		case q.Get("asset") == "admin.js":
			serveAdminFile(w, "admin/admin.js", "text/javascript; charset=utf-8")
		case q.Has("asset"):
			http.NotFound(w, r)
		default:
			serveAdminFile(w, "admin/index.html", "text/html; charset=utf-8")
		}
	})
}

func serveAdminFile(w http.ResponseWriter, name, contentType string) {
	data, _ := adminFiles.ReadFile(name)
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
	w.Write(data)
}

// serveAdminStream accepts the page's EventSource as a connection of its
// own and sends it a snapshot every second until it goes away.
func (b *Broker) serveAdminStream(w http.ResponseWriter, r *http.Request, room string) {
	// An anonymous connection in no room: the page's query names none, and
	// the operator's own user messages must not reach it.
	r = r.Clone(ContextWithUser(r.Context(), ""))
	r.URL.RawQuery = ""
	c, err := b.Accept(w, r)
	if err != nil {
		return // Accept has answered
	}
	tick := time.NewTicker(adminEvery)
	defer tick.Stop()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for {
		// Not Send: a snapshot of many instances may exceed the size
		// limit meant for applications' messages.
		if err := c.send(b.adminSnapshot(room)); err != nil {
			c.Close()
			<-done
			return
		}
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

func (b *Broker) adminSnapshot(room string) []byte {
	s := adminSnapshot{Instance: b.instance, At: time.Now(), Room: room}
	if room != "" {
		ctx, cancel := context.WithTimeout(context.Background(), adminEvery/4)
		if p, err := b.PresencePage(ctx, room, "", 50); err != nil {
			s.Error = err.Error()
		} else {
			s.Presence = &p
		}
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminEvery/2)
	defer cancel()
	var err error
	s.Cluster, err = b.ClusterStats(ctx)
	if err != nil || len(s.Cluster) < b.pres.Instances() {
		s.Partial = true
	}
	if len(s.Cluster) == 0 {
		s.Cluster = []Stats{b.Stats()}
	}
	data, _ := json.Marshal(s)
	return data
}
