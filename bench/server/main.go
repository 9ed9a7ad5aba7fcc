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
//	/control/paced            ?prefix=room&targets=K&rate=R&duration=D&size=B&burst=b[&abort=A]: R messages/s in all,
//	                          round-robin over rooms prefix+(i%K), for D (stopping if over A behind);
//	                          answers a JSON line (sent, late sends)
//	/control/paced-user       the same, to users prefix+(i%K)
//	/control/gc               runtime.GC + debug.FreeOSMemory, before reading RSS
//
// Each message is {"b":burst,"s":seq,"t":unixnano,"p":"xx…"} of about B bytes,
// where seq counts messages per target, so every subscriber expects 0,1,2…
package main

import (
	"context"
	"encoding/json"
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
	"syscall"
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
	mux.HandleFunc("/control/paced", func(w http.ResponseWriter, r *http.Request) { paced(w, r, im.publish) })
	mux.HandleFunc("/control/paced-user", func(w http.ResponseWriter, r *http.Request) { paced(w, r, im.sendUser) })
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

// pacedReply is /control/paced's answer.
type pacedReply struct {
	Sent     int     `json:"sent"`
	Late     int     `json:"late"`        // sends more than 1 ms past their due time
	MaxLate  float64 `json:"max_late_ms"` // the largest lateness of any send
	StartNs  int64   `json:"start_ns"`    // due time of message 0, Unix ns
	ElapsedS float64 `json:"elapsed_s"`   // from the start to the return of the last send
	Aborted  bool    `json:"aborted"`     // stopped early: a send was more than abort behind
}

// paced publishes at a fixed total rate: n = rate×duration messages, message
// i due at start + i/rate and sent to prefix+(i%targets) with seq i/targets
// (so every subscriber of a target expects 0,1,2…). Each due time is
// computed from the start, never from the previous send, so the sleep's
// overshoot (timer granularity, scheduling) delays a send but does not
// accumulate into drift; when the loop is behind it sends what is due at
// once, without sleeping. It counts the sends more than 1 ms past their due
// time and the largest lateness: a publisher that cannot keep up offers less
// than the rate asked for, which invalidates the point. With abort > 0 it
// stops once a send is more than abort late (a blocking publish far behind
// would otherwise stretch the point to many times its duration); the
// answer then says so, and sent counts what was sent.
//
// The payload's "t" is the message's due time, not the moment of the send.
// An application's events happen on their own schedule and wait for the
// publish call, so a publisher that stalls (a Publish that blocks on a full
// hub channel, a filter over every session, a GC pause) shows up as latency,
// as it would for the application: the queue is charged to the
// implementation wherever it sits, in the caller or inside.
func paced(w http.ResponseWriter, r *http.Request, send func(string, []byte)) {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	targets, _ := strconv.Atoi(q.Get("targets"))
	rate, _ := strconv.ParseFloat(q.Get("rate"), 64)
	duration, _ := time.ParseDuration(q.Get("duration"))
	size, _ := strconv.Atoi(q.Get("size"))
	b, _ := strconv.Atoi(q.Get("burst"))
	abort, _ := time.ParseDuration(q.Get("abort"))
	n := int(rate * duration.Seconds())
	if targets <= 0 || rate <= 0 || n <= 0 {
		http.Error(w, "targets, rate and duration must be positive", http.StatusBadRequest)
		return
	}
	names := make([]string, targets)
	for i := range names {
		names[i] = prefix + strconv.Itoa(i)
	}
	pad := strings.Repeat("x", max(size, 0))
	ctx := r.Context()
	var rep pacedReply
	start := time.Now()
	rep.StartNs = start.UnixNano()
	for i := range n {
		if ctx.Err() != nil {
			return
		}
		due := time.Duration(float64(i) * 1e9 / rate) // since start
		if d := due - time.Since(start); d > 0 {
			sleep(d)
		}
		late := time.Since(start) - due // monotonic clock
		if late > time.Millisecond {
			rep.Late++
		}
		rep.MaxLate = max(rep.MaxLate, float64(late)/1e6)
		msg := make([]byte, 0, size+8)
		msg = append(msg, `{"b":`...)
		msg = strconv.AppendInt(msg, int64(b), 10)
		msg = append(msg, `,"s":`...)
		msg = strconv.AppendInt(msg, int64(i/targets), 10)
		msg = append(msg, `,"t":`...)
		msg = strconv.AppendInt(msg, rep.StartNs+int64(due), 10) // the due time, see above
		msg = append(msg, `,"p":"`...)
		msg = append(msg, pad[:max(size-len(msg)-2, 0)]...)
		msg = append(msg, `"}`...)
		send(names[i%targets], msg)
		rep.Sent++
		if abort > 0 && late > abort {
			rep.Aborted = true
			break
		}
	}
	rep.ElapsedS = time.Since(start).Seconds()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rep)
}

// sleep waits d in nanosleep(2), retried on EINTR. time.Sleep rounds a wait
// under a millisecond up to about 1.07 ms (the runtime's netpoller waits in
// whole milliseconds when nothing else wakes it), which alone would make
// nearly every send past 1,000/s "late"; nanosleep overshoots by about
// 65 µs here. It blocks the publisher's thread only, through the ordinary
// syscall path, so the runtime hands its P to other goroutines meanwhile.
func sleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
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
