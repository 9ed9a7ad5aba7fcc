package pubsub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	. "github.com/roomcast/pubsub"

	"github.com/coder/websocket"

	"github.com/roomcast/pubsub/embedded"
)

// newJetStreamCluster starts n brokers whose embedded nodes form one NATS
// cluster with JetStream, history replicated on every node. They start
// together, as instances of a deployment do: the stream needs a quorum.
func newJetStreamCluster(t *testing.T, n int, opts ...Option) []*Broker {
	t.Helper()
	var routes []string
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, "nats-route://"+l.Addr().String())
		l.Close()
	}
	brokers := make([]*Broker, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			o := append([]Option{
				WithLogger(quietLogger()),
				WithHistory("*", History{Messages: 100000}),
				WithHistoryReplicas(n),
				WithEmbedded(embedded.Options{
					Name: fmt.Sprintf("node%d", i), Host: "127.0.0.1", Port: -1,
					Cluster: &embedded.Cluster{Name: "roomcast-js", Host: "127.0.0.1", Port: ports[i], Routes: routes},
				}),
			}, opts...)
			brokers[i], errs[i] = New(o...)
		})
	}
	wg.Wait()
	for i, b := range brokers {
		if b != nil {
			t.Cleanup(func() { _ = b.Close() })
		}
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
	}
	return brokers
}

// movingClient is a WebSocket client with a list of servers: when its
// connection dies it connects to the next one and resumes the room from the
// last message it has, as the browser client does.
type movingClient struct {
	name  string
	urls  []string
	room  string
	mu    sync.Mutex
	ids   []uint64 // every message id received, in order
	texts []string
	moves int
	trunc bool
	err   error
}

func (m *movingClient) run(ctx context.Context, subscribed chan<- struct{}) {
	first := true
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(m.urls) {
		c, _, err := websocket.Dial(ctx, m.urls[i], nil)
		if err != nil {
			continue // that server is gone: the next
		}
		c.SetReadLimit(1 << 24)
		sub := map[string]any{"type": "subscribe", "room": m.room}
		m.mu.Lock()
		if n := len(m.ids); n > 0 {
			sub["last_id"] = strconv.FormatUint(m.ids[n-1], 10)
		}
		m.mu.Unlock()
		p, _ := json.Marshal(sub)
		_ = c.Write(ctx, websocket.MessageText, p)
		m.read(ctx, c, first, subscribed)
		first = false
		_ = c.CloseNow()
		if ctx.Err() == nil {
			m.mu.Lock()
			m.moves++
			m.mu.Unlock()
		}
	}
}

func (m *movingClient) read(ctx context.Context, c *websocket.Conn, first bool, subscribed chan<- struct{}) {
	for {
		_, p, err := c.Read(ctx)
		if err != nil {
			return
		}
		for _, line := range bytes.Split(p, []byte("\n")) {
			var f frame
			if err := json.Unmarshal(line, &f); err != nil {
				m.fail(fmt.Errorf("bad frame %q", line))
				return
			}
			switch f.Type {
			case "subscribed":
				if first {
					subscribed <- struct{}{}
				}
			case "truncated":
				m.mu.Lock()
				m.trunc = true
				m.mu.Unlock()
			case "message":
				id, _ := strconv.ParseUint(f.ID, 10, 64)
				m.mu.Lock()
				m.ids = append(m.ids, id)
				m.texts = append(m.texts, f.Text())
				m.mu.Unlock()
			case "error":
				m.fail(fmt.Errorf("error frame %+v", f))
			}
		}
	}
}

func (m *movingClient) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

// kill makes instance b die as a crashed process would: its NATS node
// stops, its sockets are cut without a close frame, its port refuses.
func kill(b *Broker, hs *httptest.Server) {
	hs.Listener.Close()
	Crash(b)
}

// Three instances with history replicated on their three embedded nodes.
// Mid-stream, the node that leads the history stream dies: its clients
// move to the other instances and resume, the survivors' clients stay, the
// publisher retries what was not acknowledged. Every acknowledged message
// reaches every client exactly once, in order.
func TestClusterNodeKillLosesNothing(t *testing.T) {
	t.Logf("%v: start", time.Now().Format("15:04:05.000"))
	bs := newJetStreamCluster(t, 3)
	t.Logf("%v: cluster up", time.Now().Format("15:04:05.000"))
	nc, err := EmbeddedServer(bs[0]).Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, "ROOMCAST_HISTORY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := -1
	for i := range bs {
		if info.Cluster != nil && info.Cluster.Leader == fmt.Sprintf("node%d", i) {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no stream leader among the nodes: %+v", info.Cluster)
	}
	survivor := (victim + 1) % 3
	servers := make([]*httptest.Server, 3)
	for i, b := range bs {
		servers[i] = serve(t, b, nil)
	}
	url := func(i int) string { return liveURL(servers[i], "ws", nil) }

	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	subscribed := make(chan struct{}, 100)
	var clients []*movingClient
	for node := range 3 {
		for k := range 3 {
			m := &movingClient{name: fmt.Sprintf("node%d-%d", node, k), room: "feed",
				urls: []string{url(node), url((node + 1) % 3), url((node + 2) % 3)}}
			clients = append(clients, m)
			wg.Go(func() { m.run(runCtx, subscribed) })
		}
	}
	defer func() { stop(); wg.Wait() }()
	for range clients {
		select {
		case <-subscribed:
		case <-time.After(waitFor):
			t.Fatal("clients did not subscribe")
		}
	}
	for _, b := range bs {
		awaitInterest(t, b, Subjects(b).Live("feed"), 3)
	}

	const total = 600
	var acked []uint64
	publisher := bs[survivor]
	for n := 1; n <= total; n++ {
		if n == total/3 {
			t.Logf("%v: killing node%d at message %d", time.Now().Format("15:04:05.000"), victim, n)
			kill(bs[victim], servers[victim])
		}
		for try := 0; ; try++ {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ack, err := publisher.PublishAck(pctx, "feed", msg(strconv.Itoa(n)))
			cancel()
			if err == nil {
				id, _ := strconv.ParseUint(ack.ID, 10, 64)
				acked = append(acked, id)
				break
			}
			t.Logf("publish %d try %d: %v", n, try, err)
			if try > 30 {
				t.Fatalf("publish %d: %v", n, err)
			}
		}
	}
	t.Logf("%v: published", time.Now().Format("15:04:05.000"))
	last := acked[len(acked)-1]
	eventually(t, "every client has the last message", func() bool {
		for _, m := range clients {
			m.mu.Lock()
			n := len(m.ids)
			done := n > 0 && m.ids[n-1] >= last
			m.mu.Unlock()
			if !done {
				return false
			}
		}
		return true
	})
	stop()
	wg.Wait()

	moved := 0
	for _, m := range clients {
		m.mu.Lock()
		if m.err != nil {
			t.Errorf("%s: %v", m.name, m.err)
		}
		if m.trunc {
			t.Errorf("%s was told history was truncated", m.name)
		}
		got := map[uint64]bool{}
		for i, id := range m.ids {
			if i > 0 && id <= m.ids[i-1] {
				t.Errorf("%s: id %d after %d (duplicate or out of order)", m.name, id, m.ids[i-1])
			}
			got[id] = true
		}
		for _, id := range acked {
			if !got[id] {
				t.Errorf("%s lost acknowledged message %d", m.name, id)
			}
		}
		if m.moves > 0 {
			moved++
		}
		m.mu.Unlock()
	}
	if moved < 3 {
		t.Errorf("%d clients moved, want the victim's 3", moved)
	}
}
