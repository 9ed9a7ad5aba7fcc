// Command server is the server side of the benchmark harness: one of several
// implementations of the same job (rooms, users, server-side publish) behind
// the same HTTP interface, so the load generator measures them alike.
//
//	server -impl roomcast|centrifuge|gorilla|melody -addr 127.0.0.1:0
//	server -impl roomcast -name node0 -cluster-port 7001 -routes nats-route://127.0.0.1:7002,… -monitor-port 8222
//
// With -cluster-port (roomcast only) the broker's embedded NATS node opens a
// client listener and a route listener on loopback and joins the other
// nodes named by -routes as one cluster (no JetStream); -monitor-port opens
// nats-server's monitoring endpoint (/routez), which the load generator
// polls until the mesh is complete.
//
// It prints "listening <addr>" once ready. Endpoints:
//
//	/ws                       WebSocket (and SSE for roomcast and centrifuge), ?room=R (repeatable) &user=U
//	/emulation                centrifuge only: its emulation endpoint (an SSE client's pongs)
//	/control/publish          ?prefix=room&targets=T&n=N&size=B&burst=K: message i goes to room prefix+(i%T)
//	/control/user             the same, to users prefix+(i%T)
//	/control/gc               runtime.GC + debug.FreeOSMemory, before reading RSS
//
// Each message is {"b":burst,"s":seq,"t":unixnano,"p":"xx…"} of about B bytes,
// where seq counts messages per target, so every subscriber expects 0,1,2…
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/roomcast/pubsub"
)

// impl is one implementation under test.
type impl interface {
	handler() http.Handler
	publish(room string, msg []byte)
	sendUser(user string, msg []byte)
}

func main() {
	name := flag.String("impl", "roomcast", "roomcast, roomcast-held (WithHoldRequests), roomcast-nostats (WithoutStats), centrifuge, gorilla or melody")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	var cl clusterFlags
	flag.StringVar(&cl.name, "name", "", "roomcast: NATS server name in the cluster")
	flag.IntVar(&cl.port, "cluster-port", 0, "roomcast: join a NATS cluster, route listener on 127.0.0.1:PORT (0: no cluster)")
	flag.StringVar(&cl.routes, "routes", "", "roomcast: comma-separated route URLs of the cluster's nodes (its own is ignored)")
	flag.IntVar(&cl.monitor, "monitor-port", 0, "roomcast: nats-server monitoring on 127.0.0.1:PORT (0: none)")
	flag.Parse()

	var im impl
	switch *name {
	case "roomcast":
		im = newRoomcast(cl)
	case "roomcast-held":
		im = newRoomcast(cl, pubsub.WithHoldRequests())
	case "roomcast-nostats":
		im = newRoomcast(cl, pubsub.WithoutStats())
	case "centrifuge":
		im = newCentrifuge()
	case "gorilla":
		im = newGorilla()
	case "melody":
		im = newMelody()
	default:
		log.Fatalf("unknown impl %q", *name)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", im.handler())
	if rt, ok := im.(interface{ routes(*http.ServeMux) }); ok { // more endpoints of its own
		rt.routes(mux)
	}
	mux.HandleFunc("/control/publish", func(w http.ResponseWriter, r *http.Request) { burst(w, r, im.publish) })
	mux.HandleFunc("/control/user", func(w http.ResponseWriter, r *http.Request) { burst(w, r, im.sendUser) })
	mux.HandleFunc("/control/gc", func(w http.ResponseWriter, r *http.Request) {
		debug.FreeOSMemory()
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	srv := &http.Server{Handler: mux, ErrorLog: slog.NewLogLogger(slog.NewTextHandler(os.Stderr, nil), slog.LevelError)}
	log.Fatal(srv.Serve(ln))
}

func burst(w http.ResponseWriter, r *http.Request, send func(string, []byte)) {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	targets, _ := strconv.Atoi(q.Get("targets"))
	n, _ := strconv.Atoi(q.Get("n"))
	size, _ := strconv.Atoi(q.Get("size"))
	b, _ := strconv.Atoi(q.Get("burst"))
	interval, _ := time.ParseDuration(q.Get("interval")) // between messages; 0 = as fast as possible
	if targets <= 0 || n <= 0 {
		http.Error(w, "targets and n must be positive", http.StatusBadRequest)
		return
	}
	names := make([]string, targets)
	for i := range names {
		names[i] = prefix + strconv.Itoa(i)
	}
	ctx := r.Context()
	for i := range n {
		if ctx.Err() != nil {
			return
		}
		seq := i / targets
		head := fmt.Sprintf(`{"b":%d,"s":%d,"t":%d,"p":"`, b, seq, time.Now().UnixNano())
		pad := max(size-len(head)-2, 0)
		send(names[i%targets], []byte(head+strings.Repeat("x", pad)+`"}`))
		if interval > 0 {
			time.Sleep(interval)
		}
	}
	fmt.Fprintln(w, "ok")
}

// roomcast is the library under test, through its public API only.
type roomcast struct {
	ps interface {
		Handler() http.Handler
		Publish(context.Context, string, []byte) error
		SendToUser(context.Context, string, []byte) error
	}
}

func (r *roomcast) handler() http.Handler {
	h := r.ps.Handler()
	// The user comes from the query, as a host's auth middleware would set it.
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if u := req.URL.Query().Get("user"); u != "" {
			req = req.WithContext(withUser(req.Context(), u))
		}
		h.ServeHTTP(w, req)
	})
}

func (r *roomcast) publish(room string, msg []byte) {
	if err := r.ps.Publish(context.Background(), room, msg); err != nil {
		log.Print(err)
	}
}

func (r *roomcast) sendUser(user string, msg []byte) {
	if err := r.ps.SendToUser(context.Background(), user, msg); err != nil {
		log.Print(err)
	}
}
