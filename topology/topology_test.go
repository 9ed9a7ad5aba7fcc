// Package topology tests the broker against a real nats-server process,
// built from the module the project already depends on: app instances
// whose embedded servers join it as leaf nodes, and instances with no
// embedded server at all.
package topology

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/testkit"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/embedded"
)

var natsServer string // the built binary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "roomcast-topology")
	if err != nil {
		panic(err)
	}
	natsServer = filepath.Join(dir, "nats-server")
	build := exec.Command("go", "build", "-o", natsServer, "github.com/nats-io/nats-server/v2")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building nats-server:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// hub runs nats-server on loopback with a leaf node listener and
// JetStream, until the test ends. It returns the client and leaf URLs.
func hub(t *testing.T) (clientURL, leafURL string) {
	t.Helper()
	dir := t.TempDir()
	ports := testkit.FreePorts(t, 2)
	port, leaf := ports[0], ports[1]
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nleafnodes { listen: 127.0.0.1:%d }\njetstream { store_dir: %q, domain: hub }\n", port, leaf, filepath.Join(dir, "js"))
	if err := os.WriteFile(filepath.Join(dir, "hub.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(natsServer, "-c", filepath.Join(dir, "hub.conf"))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	clientURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return clientURL, fmt.Sprintf("nats-leaf://127.0.0.1:%d", leaf)
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newBroker(t *testing.T, opts ...pubsub.Option) *pubsub.Broker {
	t.Helper()
	b, err := pubsub.New(append([]pubsub.Option{pubsub.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// serve mounts b behind an identity taken from the X-User header.
func serve(t *testing.T, b *pubsub.Broker) *httptest.Server {
	srv := httptest.NewServer(pubsub.Identify(func(r *http.Request) string { return r.Header.Get("X-User") })(b.Handler()))
	t.Cleanup(srv.Close)
	return srv
}

type frame struct {
	Type, ID, Room, To, Conn string
	Data                     struct{ Text string }
}

// client reads in a goroutine of its own: a read with a deadline on a
// coder/websocket connection closes the connection when it expires.
type client struct {
	t      *testing.T
	c      *websocket.Conn
	frames chan frame
	conn   string
}

func dial(t *testing.T, srv *httptest.Server, user string, rooms ...string) *client {
	t.Helper()
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/?"
	for _, r := range rooms {
		u += "room=" + r + "&"
	}
	c, _, err := websocket.Dial(context.Background(), u, &websocket.DialOptions{HTTPHeader: http.Header{"X-User": {user}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	cl := &client{t: t, c: c, frames: make(chan frame, 10000)}
	go func() {
		defer close(cl.frames)
		for {
			_, p, err := c.Read(context.Background())
			if err != nil {
				return
			}
			sc := bufio.NewScanner(strings.NewReader(string(p)))
			for sc.Scan() {
				var f frame
				_ = json.Unmarshal(sc.Bytes(), &f)
				cl.frames <- f
			}
		}
	}()
	cl.conn = cl.next().Conn
	for range rooms {
		if f := cl.next(); f.Type != "subscribed" {
			t.Fatalf("got %+v", f)
		}
	}
	return cl
}

func (c *client) nextWithin(d time.Duration) (frame, error) {
	select {
	case f, ok := <-c.frames:
		if !ok {
			return frame{}, io.EOF
		}
		return f, nil
	case <-time.After(d):
		return frame{}, context.DeadlineExceeded
	}
}

func (c *client) next() frame {
	c.t.Helper()
	f, err := c.nextWithin(10 * time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

// until reads until a frame with data text marker and returns the texts
// before it ("type:text").
func (c *client) until(marker string) []string {
	c.t.Helper()
	var got []string
	for {
		f := c.next()
		if f.Data.Text == marker {
			return got
		}
		if f.Data.Text != "probe" {
			got = append(got, f.Type+":"+f.Data.Text)
		}
	}
}

func msg(text string) []byte { return []byte(`{"text":"` + text + `"}`) }

// awaitInterest publishes probes from b until every client has one: the
// subscriptions' interest has crossed the leaf connections (asynchronously).
func awaitInterest(t *testing.T, b *pubsub.Broker, room string, clients ...*client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range clients {
		for {
			_ = b.Publish(context.Background(), room, msg("probe"))
			f, err := c.nextWithin(50 * time.Millisecond)
			if err == nil && f.Data.Text == "probe" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("interest did not propagate")
			}
		}
	}
	for _, c := range clients {
		_ = b.SendToConn(context.Background(), c.conn, msg("probes done"))
		c.until("probes done")
	}
}

// deliverAcross checks room, user and connection delivery between two
// brokers that share one NATS system.
func deliverAcross(t *testing.T, a, b *pubsub.Broker) {
	sa, sb := serve(t, a), serve(t, b)
	aliceA := dial(t, sa, "alice", "lobby")
	aliceB := dial(t, sb, "alice", "lobby")
	bobB := dial(t, sb, "bob", "lobby")
	awaitInterest(t, a, "lobby", aliceA, aliceB, bobB)
	ctx := context.Background()
	_ = a.Publish(ctx, "lobby", msg("room"))
	_ = a.SendToUser(ctx, "alice", msg("alice"))
	_ = a.SendToConn(ctx, bobB.conn, msg("bob's tab"))
	for _, c := range []*client{aliceA, aliceB, bobB} {
		_ = a.SendToConn(ctx, c.conn, msg("end"))
	}
	for name, tc := range map[string]struct {
		c    *client
		want string
	}{
		"alice on A": {aliceA, "message:room,direct:alice"},
		"alice on B": {aliceB, "message:room,direct:alice"},
		"bob on B":   {bobB, "message:room,direct:bob's tab"},
	} {
		if got := strings.Join(tc.c.until("end"), ","); got != tc.want {
			t.Errorf("%s received %q, want %q", name, got, tc.want)
		}
	}
}

// Each instance's embedded server joins an existing NATS system as a leaf
// node, with no listener of its own.
// History is stored in the hub's JetStream (a leaf instance runs none of
// its own), so it resumes across instances.
func TestLeafNodes(t *testing.T) {
	_, leaf := hub(t)
	history := pubsub.WithHistory("chat:*", pubsub.History{Messages: 100})
	domain := pubsub.WithJetStreamDomain("hub")
	a := newBroker(t, history, domain, pubsub.WithEmbedded(embedded.Options{Name: "leaf-a", LeafRemotes: []string{leaf}}))
	b := newBroker(t, history, domain, pubsub.WithEmbedded(embedded.Options{Name: "leaf-b", LeafRemotes: []string{leaf}}))
	deliverAcross(t, a, b)
	resumeAcross(t, a, b)
	presenceAcross(t, a, b)
}

// Instances with no embedded server, on the NATS URL ops runs; history is
// stored in that server's JetStream.
func TestExternalNATS(t *testing.T) {
	url, _ := hub(t)
	history := pubsub.WithHistory("chat:*", pubsub.History{Messages: 100})
	a := newBroker(t, pubsub.WithNATSURL(url), history)
	b := newBroker(t, pubsub.WithNATSURL(url), history)
	deliverAcross(t, a, b)
	resumeAcross(t, a, b)
	presenceAcross(t, a, b)
}

// resumeAcross stores messages through a and resumes them on b.
func resumeAcross(t *testing.T, a, b *pubsub.Broker) {
	t.Helper()
	ctx := context.Background()
	first, err := a.PublishAck(ctx, "chat:x", msg("0"))
	if err != nil || !first.Stored {
		t.Fatalf("PublishAck: %+v %v", first, err)
	}
	for _, m := range []string{"1", "2"} {
		_ = a.Publish(ctx, "chat:x", msg(m))
	}
	c := dial(t, serve(t, b), "carol")
	_ = c.c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","room":"chat:x","last_id":"`+first.ID+`"}`))
	if f := c.next(); f.Type != "subscribed" {
		t.Fatalf("got %+v", f)
	}
	for _, want := range []string{"1", "2"} {
		if f := c.next(); f.Data.Text != want {
			t.Fatalf("resume on the other instance: %+v, want %s", f, want)
		}
	}
}

// presenceAcross checks that a and b see the same room members.
func presenceAcross(t *testing.T, a, b *pubsub.Broker) {
	t.Helper()
	ca := dial(t, serve(t, a), "ann")
	cb := dial(t, serve(t, b), "ben")
	for _, c := range []*client{ca, cb} {
		_ = c.c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"subscribe","room":"here"}`))
		if f := c.next(); f.Type != "subscribed" {
			t.Fatalf("got %+v", f)
		}
	}
	for _, br := range []*pubsub.Broker{a, b} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			p, err := br.Presence(context.Background(), "here")
			if err == nil && p.Count == 2 && len(p.Members) == 2 && p.Members[0].User == "ann" && p.Members[1].User == "ben" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("presence: %+v %v", p, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
