// Command cluster runs three instances of one app as a cluster: each
// embeds a NATS node, the nodes form a NATS cluster over routes, and room
// history is replicated on all three. A browser on any instance sees the
// same rooms, the same presence and the same history; kill an instance and
// its browsers move to another one and resume without losing a message.
//
//	go run ./examples/cluster    # then open http://127.0.0.1:8081, :8082 and :8083
//
// Without -node it starts the three instances as child processes of itself
// (so one can be killed alone) and stops them on Ctrl-C. With -node it is
// one instance, as a container in a deployment would run it:
//
//	cluster -node 1 -http 127.0.0.1:8082 -route-port 6223 \
//	  -routes nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224
package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/examples/internal/demoapp"
	"github.com/roomcast/pubsub/examples/internal/demoauth"
	"github.com/roomcast/pubsub/pubsubprom"
)

//go:embed index.html
var indexHTML []byte

func main() {
	node := flag.Int("node", -1, "run one instance with this number (default: start three)")
	httpAddr := flag.String("http", "", "this instance's HTTP address (default 127.0.0.1:808<node+1>)")
	routePort := flag.Int("route-port", 0, "this instance's NATS route port (default 622<node+2>)")
	routeHost := flag.String("route-host", "127.0.0.1", "the address this instance's NATS routes listen on (0.0.0.0 in a container)")
	routes := flag.String("routes", "nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224", "every node's route URL, comma-separated")
	peers := flag.String("peers", "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083", "every instance's public URL, for the page's links and the client's fallback list")
	flag.Parse()
	if *node < 0 {
		runAll()
		return
	}
	if *httpAddr == "" {
		*httpAddr = fmt.Sprintf("127.0.0.1:%d", 8081+*node)
	}
	if *routePort == 0 {
		*routePort = 6222 + *node
	}
	name := fmt.Sprintf("node%d", *node)
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("instance", name)
	key, _ := hex.DecodeString(os.Getenv("DEMO_SESSION_KEY")) // shared, so one login works everywhere
	if len(key) == 0 {
		log.Fatal("DEMO_SESSION_KEY must hold the hex session key every instance shares")
	}
	ps, err := pubsub.New(
		pubsub.WithLogger(logger),
		pubsub.WithEmbedded(embedded.Options{
			Name: name,
			// The client listener routes require: loopback only.
			Host: "127.0.0.1", Port: -1,
			Cluster: &embedded.Cluster{Name: "roomcast-demo", Host: *routeHost, Port: *routePort, Routes: strings.Split(*routes, ",")},
		}),
		pubsub.WithHistory("*", pubsub.History{Messages: 500, MaxAge: 24 * time.Hour}),
		pubsub.WithHistoryReplicas(3),
		pubsub.WithClientPublish(func(ctx context.Context, user, room string) error { return nil }),
		// The page of one instance may connect to another when its own dies.
		pubsub.WithOriginPatterns("127.0.0.1:*", "localhost:*"),
		pubsub.WithPresenceTimeout(6*time.Second),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := demoapp.Serve(*httpAddr, newApp(ps, demoauth.NewWithKey(key), name, strings.Split(*peers, ",")), ps, logger); err != nil {
		log.Fatal(err)
	}
}

func newApp(ps *pubsub.Broker, auth *demoauth.Sessions, name string, peers []string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", demoapp.Page(indexHTML))
	auth.Mount(mux)
	mux.HandleFunc("GET /api/instance", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*") // public, read by the pages of the other instances
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"instance": name, "peers": peers})
	})
	mux.Handle("GET /api/presence/{room}", auth.RequireLogin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := ps.Presence(r.Context(), r.PathValue("room"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p)
	})))
	mux.Handle("/live", auth.RequireLogin(ps.Handler()))
	mux.Handle("GET /live/client.js", ps.Handler())
	// Operations: the readiness probe (Kubernetes: see k8s.yaml), and the
	// ops page and metrics behind the app's operator check.
	mux.Handle("GET /healthz", ps.ReadyHandler())
	mux.Handle("GET /admin", auth.RequireOperator(ps.AdminHandler()))
	mux.Handle("GET /metrics", auth.RequireOperator(pubsubprom.Handler(ps)))
	return mux
}

// runAll starts three instances as child processes and stops them on
// Ctrl-C. Killing one child shows a node failure.
func runAll() {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	var cmds []*exec.Cmd
	for i := range 3 {
		cmd := exec.Command(self, append([]string{"-node", fmt.Sprint(i)}, os.Args[1:]...)...)
		cmd.Env = append(os.Environ(), "DEMO_SESSION_KEY="+hex.EncodeToString(key))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		log.Printf("node%d: pid %d, http://127.0.0.1:%d (kill -9 %d to see a node die)", i, cmd.Process.Pid, 8081+i, cmd.Process.Pid)
		cmds = append(cmds, cmd)
		wg.Go(func() { _ = cmd.Wait() })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-ctx.Done():
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		<-done
	case <-done:
	}
}
