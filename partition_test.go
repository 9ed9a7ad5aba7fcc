package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/testkit"
)

// iptables runs iptables, or skips the test where it cannot (not root, no
// iptables: CI runs as root and test.sh installs it).
func iptables(t *testing.T, args ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cutting routes with iptables needs root (CI runs as root)")
	}
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %v: %v: %s", args, err, out)
	}
}

// cutPort drops every packet to or from a loopback port (no reset: the
// connections stall, as behind a failed switch) until heal is called.
func cutPort(t *testing.T, port int) (heal func()) {
	t.Helper()
	rules := [][]string{
		{"INPUT", "-i", "lo", "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "DROP"},
		{"INPUT", "-i", "lo", "-p", "tcp", "--sport", strconv.Itoa(port), "-j", "DROP"},
	}
	for _, r := range rules {
		iptables(t, append([]string{"-I"}, r...)...)
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, r := range rules {
				iptables(t, append([]string{"-D"}, r...)...)
			}
		})
	}
	t.Cleanup(heal)
	return heal
}

// Node 2 of three is cut off from the others by dropping its route
// traffic (a real partition: checked by the nodes' own route counts) while
// node 0 and node 2 publish and clients read on every node, then the cut
// heals.
// Nothing acknowledged is lost, nothing is stored twice (publishes that
// failed are retried with their key), no client gets an id twice; node 2
// is not ready while cut off; the route loss and its recovery are logged.
func TestRoutePartitionLosesNothingAndSaysSo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("cutting routes with iptables needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables not found: test.sh installs it")
	}
	brokers, logs, ports := partitionCluster(t)
	routesOf := func(i int) int { return EmbeddedServer(brokers[i]).NATS().NumRoutes() }

	var urls []string
	for _, b := range brokers {
		urls = append(urls, liveURL(serve(t, b, nil), "ws", nil))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var clients []*movingClient
	var clientsWG sync.WaitGroup
	for i := range 3 {
		m := &movingClient{name: fmt.Sprint("on node", i), room: "orders", urls: append(slices.Clone(urls[i:]), urls[:i]...)}
		clients = append(clients, m)
		subscribed := make(chan struct{}, 1)
		clientsWG.Go(func() { m.run(ctx, subscribed) })
		select {
		case <-subscribed:
		case <-time.After(waitFor):
			t.Fatalf("client %s did not subscribe", m.name)
		}
	}

	// Node 0 (majority side) and node 2 (the one cut off) publish all
	// along; a failed publish is retried with its key, as an application
	// would: node 2's wait out the cut.
	var stopping atomic.Bool
	pubs := []*keyedPublisher{{b: brokers[0], prefix: "o"}, {b: brokers[2], prefix: "n"}}
	var pubWG sync.WaitGroup
	for _, p := range pubs {
		pubWG.Go(func() { p.run(ctx, &stopping) })
	}
	stopPub := func() { stopping.Store(true); pubWG.Wait() }
	count := pubs[0].count
	eventually(t, "messages flowing", func() bool { return count() > 20 })

	heal := cutPort(t, ports[2])
	cutAt := time.Now()
	eventually(t, "node 2 cut off (its own route count)", func() bool { return routesOf(2) == 0 })
	t.Logf("the cut was noticed by node 2 after %v; routes: node0 %d, node1 %d", time.Since(cutAt).Round(time.Millisecond), routesOf(0), routesOf(1))
	// Its node notices it is not current with its cluster when its Raft
	// heartbeats time out: seconds.
	for !errors.Is(brokers[2].Ready(ctx), ErrNotReady) {
		if time.Since(cutAt) > 20*time.Second {
			t.Fatalf("node 2 still ready 20 s after it was cut off: %v", brokers[2].Ready(ctx))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("node 2 not ready %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	// The majority goes on: at once, or once it has elected new leaders
	// if node 2 led the stream (a Raft election takes up to ~10 s).
	before := count()
	for count()-before < 50 {
		if time.Since(cutAt) > 20*time.Second {
			t.Fatalf("only %d messages acknowledged in 20 s on the majority side", count()-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("50 messages acknowledged by the majority %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	heal()
	healedAt := time.Now()
	eventually(t, "node 2 back in the mesh", func() bool { return routesOf(2) >= 2 })
	deadline := time.Now().Add(20 * time.Second)
	for brokers[2].Ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("node 2 not ready 20 s after the heal: %v", brokers[2].Ready(ctx))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("node 2 ready again %v after the heal", time.Since(healedAt).Round(time.Millisecond))
	time.Sleep(time.Second)
	stopPub()

	total := 0
	for _, p := range pubs {
		t.Logf("publisher %q: %d messages acknowledged, %d publishes with an unknown outcome retried", p.prefix, len(p.acked), p.unknown)
		total += len(p.acked)
	}
	if total > MaxHistoryLimit {
		t.Fatalf("%d messages published: more than one History call reads; publish slower", total)
	}
	stored, err := brokers[1].History(ctx, "orders", MaxHistoryLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != total {
		t.Fatalf("history holds %d messages for %d acknowledged: stored twice or lost", len(stored), total)
	}
	var storedTexts []string
	for _, m := range stored {
		storedTexts = append(storedTexts, strings.Trim(strings.TrimPrefix(string(m.Data), `{"text":`), `"}`))
	}
	for _, p := range pubs {
		if got := withPrefix(storedTexts, p.prefix); !slices.Equal(got, p.acked) {
			t.Fatalf("history holds %d of %s's messages, want its %d acknowledged once each, in order", len(got), p.prefix, len(p.acked))
		}
	}
	for _, m := range clients {
		// Node 2's client gets the messages of the cut through gap repair
		// after the heal, once its node is current again (3-9 s): a bound
		// for a loaded CI machine, not a measurement.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			m.mu.Lock()
			n := len(m.texts)
			m.mu.Unlock()
			if n >= total {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has %d of %d messages 30 s after the heal", m.name, n, total)
			}
		}
		m.mu.Lock()
		if m.err != nil {
			t.Errorf("%s: %v", m.name, m.err)
		}
		for i := 1; i < len(m.ids); i++ {
			if m.ids[i] <= m.ids[i-1] {
				t.Errorf("%s got id %d after %d: twice or out of order", m.name, m.ids[i], m.ids[i-1])
			}
		}
		for _, p := range pubs {
			if got := withPrefix(m.texts, p.prefix); !slices.Equal(got, p.acked) {
				t.Errorf("%s got %d of %s's messages, want its %d acknowledged once each, in order", m.name, len(got), p.prefix, len(p.acked))
			}
		}
		m.mu.Unlock()
	}
	cancel()
	clientsWG.Wait()

	// Said at the right level, on the majority side and on node 2.
	has := func(l *testkit.Logs, level slog.Level, text string) bool {
		for _, r := range l.At(level) {
			if r.Level == level && strings.Contains(r.Msg, text) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		node  int
		level slog.Level
		text  string
	}{
		{2, slog.LevelWarn, "Router connection closed"},
		{2, slog.LevelInfo, "Route connection created"},
		{0, slog.LevelWarn, "an instance stopped answering"},
		{0, slog.LevelInfo, "an instance is heard again"},
	} {
		if !has(logs[c.node], c.level, c.text) {
			t.Errorf("node %d logged no %v line with %q", c.node, c.level, c.text)
		}
	}
}

// keyedPublisher publishes "<prefix><n>" to room orders until stopped,
// each message with its text as its key, retried until acknowledged.
type keyedPublisher struct {
	b       *Broker
	prefix  string
	mu      sync.Mutex
	acked   []string
	unknown int
}

func (p *keyedPublisher) run(ctx context.Context, stopping *atomic.Bool) {
	for i := 0; !stopping.Load() && ctx.Err() == nil; i++ {
		text := fmt.Sprint(p.prefix, i)
		for ctx.Err() == nil { // until acknowledged: a message begun is finished
			try, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := p.b.PublishOnce(try, "orders", text, msg(text))
			cancel()
			p.mu.Lock()
			if err == nil {
				p.acked = append(p.acked, text)
			} else if errors.Is(err, ErrOutcomeUnknown) {
				p.unknown++
			}
			p.mu.Unlock()
			if err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *keyedPublisher) count() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.acked) }

func withPrefix(texts []string, prefix string) []string {
	var out []string
	for _, s := range texts {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// partitionCluster starts three brokers whose embedded nodes form a
// JetStream cluster with history on all three, such that node 2 dials no
// route itself: every route to it ends at its port, so dropping that port
// cuts it off entirely. Node 2's one route is itself (which makes it a
// clustered JetStream node) and it starts once the others have met; if
// gossip still made it dial one (NATS solicits a route to a server it
// hears of), the cluster is started again.
func partitionCluster(t *testing.T) ([]*Broker, []*testkit.Logs, []int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := testkit.FreePorts(t, 3)
		var routes []string
		for _, p := range ports {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
		}
		logs := make([]*testkit.Logs, 3)
		brokers := make([]*Broker, 3)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			logs[i] = &testkit.Logs{}
			myRoutes := routes
			if i == 2 {
				myRoutes = routes[2:]
				time.Sleep(2 * time.Second)
			}
			wg.Go(func() {
				brokers[i], errs[i] = New(WithLogger(logs[i].Logger()),
					WithHistory("*", History{Messages: 100000}), WithHistoryReplicas(3), WithPresenceTimeout(3*time.Second),
					WithEmbedded(embedded.Options{
						Name: fmt.Sprintf("node%d", i), Host: "127.0.0.1", Port: -1,
						Cluster: &embedded.Cluster{Name: "partition", Host: "127.0.0.1", Port: ports[i], Routes: myRoutes},
						Configure: func(o *server.Options) {
							o.PingInterval, o.MaxPingsOut = 300*time.Millisecond, 3 // a stalled route is noticed in about a second
						},
					}))
			})
		}
		wg.Wait()
		closeAll := func() {
			for _, b := range brokers {
				if b != nil {
					_ = b.Close()
				}
			}
		}
		for i := range brokers {
			if errs[i] != nil {
				closeAll()
				t.Fatalf("node %d: %v", i, errs[i])
			}
		}
		routesOf := func(i int) int { return EmbeddedServer(brokers[i]).NATS().NumRoutes() }
		eventually(t, "a full mesh", func() bool { return routesOf(0) > 0 && routesOf(1) > 0 && routesOf(2) >= 2 })
		rz, err := EmbeddedServer(brokers[2]).NATS().Routez(nil)
		if err != nil {
			closeAll()
			t.Fatal(err)
		}
		dialed := slices.ContainsFunc(rz.Routes, func(r *server.RouteInfo) bool { return r.DidSolicit })
		if !dialed {
			t.Cleanup(closeAll)
			return brokers, logs, ports
		}
		closeAll()
		if attempt == 3 {
			t.Fatal("node 2 dialed a route itself three times: cutting its port would not cut it off")
		}
		t.Logf("node 2 dialed a route itself (gossip); starting the cluster again")
	}
}
