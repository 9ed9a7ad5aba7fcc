package pubsub_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	. "github.com/roomcast/pubsub"

	"github.com/roomcast/pubsub/embedded"
)

// newCluster starts n brokers whose embedded NATS servers form one cluster
// over loopback routes, and waits until the mesh is complete.
func newCluster(t *testing.T, n int, opts ...Option) []*Broker {
	t.Helper()
	var brokers []*Broker
	seed := ""
	for i := range n {
		c := &embedded.Cluster{Name: "roomcast-test", Host: "127.0.0.1", Port: -1}
		if seed != "" {
			c.Routes = []string{seed}
		}
		b := newBroker(t, append(opts, WithEmbedded(embedded.Options{Name: fmt.Sprintf("node%d", i), Host: "127.0.0.1", Port: -1, Cluster: c}))...)
		if seed == "" {
			seed = EmbeddedServer(b).RouteURL()
		}
		brokers = append(brokers, b)
	}
	eventually(t, "a full mesh of routes", func() bool {
		for _, b := range brokers {
			if EmbeddedServer(b).NATS().NumRoutes() < n-1 {
				return false
			}
		}
		return true
	})
	return brokers
}

// awaitInterest waits until subject has at least want subscriptions as
// node b sees them (its own, plus one per remote node): interest travels
// between nodes asynchronously.
func awaitInterest(t *testing.T, b *Broker, subject string, want int) {
	t.Helper()
	eventually(t, "interest on "+subject, func() bool {
		return EmbeddedServer(b).NATS().GlobalAccount().Interest(subject) >= want
	})
}

// Three instances, each with its own embedded node, formed into a cluster:
// room, user and connection delivery work across nodes.
func TestClusterDeliversAcrossNodes(t *testing.T) {
	bs := newCluster(t, 3)
	s0, s1, s2 := serve(t, bs[0], nil), serve(t, bs[1], nil), serve(t, bs[2], nil)
	alice0 := dialWS(t, s0, dialOpts{user: "alice", rooms: []string{"lobby"}})
	alice1 := dialSSE(t, s1, dialOpts{user: "alice", rooms: []string{"lobby"}})
	bob2 := dialWS(t, s2, dialOpts{user: "bob", rooms: []string{"lobby"}})
	carol2 := dialWS(t, s2, dialOpts{user: "carol", rooms: []string{"elsewhere"}})
	// On node 2: its own lobby subscription and one from each other node;
	// alice's user subscriptions from nodes 0 and 1.
	awaitInterest(t, bs[2], Subjects(bs[2]).Room("lobby"), 3)
	awaitInterest(t, bs[2], Subjects(bs[2]).User("alice"), 2)
	awaitInterest(t, bs[2], Subjects(bs[2]).Conn(alice1.ConnID()), 1)
	awaitInterest(t, bs[2], Subjects(bs[2]).Conn(alice0.ConnID()), 1)

	_ = bs[2].Publish(ctx, "lobby", msg("room from node 2"))
	_ = bs[2].SendToUser(ctx, "alice", msg("alice from node 2"))
	_ = bs[2].SendToConn(ctx, alice1.ConnID(), msg("conn on node 1"))
	for _, c := range []client{alice0, alice1, bob2, carol2} {
		sendMarker(t, bs[2], c, "end")
	}
	expectUntil(t, "end", map[string]receipt{
		"alice on node 0": {alice0, "message:lobby:room from node 2,direct::alice from node 2"},
		"alice on node 1": {alice1, "message:lobby:room from node 2,direct::alice from node 2,direct::conn on node 1"},
		"bob on node 2":   {bob2, "message:lobby:room from node 2"},
		"carol on node 2": {carol2, ""},
	})
}

func TestEmbeddedClusterNeedsAListener(t *testing.T) {
	_, err := embedded.Start(embedded.Options{Cluster: &embedded.Cluster{Name: "x", Host: "127.0.0.1", Port: -1}})
	if err == nil || !strings.Contains(err.Error(), "client listener") {
		t.Fatalf("a cluster node without a client listener: %v", err)
	}
}

// Several brokers on one NATS server behave as one: the scale-out path,
// with one broker dialing a URL and another on a connection of the host's.
func TestBrokersShareOneNATS(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if ns.ClientURL() == "" {
		t.Fatal("no client URL")
	}
	b1 := newBroker(t, WithNATSURL(ns.ClientURL()))
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b2 := newBroker(t, WithNATSConn(nc))
	other := newBroker(t, WithNATSURL(ns.ClientURL()), WithNamespace("otherapp"))
	srv1, srv2, srv3 := serve(t, b1, nil), serve(t, b2, nil), serve(t, other, nil)

	on1 := dialWS(t, srv1, dialOpts{user: "alice", rooms: []string{"lobby"}})
	on2 := dialSSE(t, srv2, dialOpts{user: "alice", rooms: []string{"lobby"}})
	bob2 := dialWS(t, srv2, dialOpts{user: "bob", rooms: []string{"lobby"}})
	foreign := dialWS(t, srv3, dialOpts{user: "alice", rooms: []string{"lobby"}})

	_ = b1.Publish(ctx, "lobby", msg("room from 1"))
	_ = b1.SendToUser(ctx, "alice", msg("alice from 1"))
	_ = b1.SendToConn(ctx, on2.ConnID(), msg("conn on 2 from 1"))
	// Markers from the same broker: after the three sends on one NATS
	// connection. The other namespace's marker comes from its own broker,
	// once the server has routed b1's sends (Flush).
	for _, c := range []client{on1, on2, bob2} {
		sendMarker(t, b1, c, "end")
	}
	if err := FlushNATS(b1); err != nil {
		t.Fatal(err)
	}
	sendMarker(t, other, foreign, "end")
	expectUntil(t, "end", map[string]receipt{
		"alice on 1": {on1, "message:lobby:room from 1,direct::alice from 1"},
		"alice on 2": {on2, "message:lobby:room from 1,direct::alice from 1,direct::conn on 2 from 1"},
		"bob on 2":   {bob2, "message:lobby:room from 1"},
		"namespace":  {foreign, ""},
	})
	// The other way round.
	_ = b2.Publish(ctx, "lobby", msg("room from 2"))
	if f := on1.next(t); f.Text() != "room from 2" {
		t.Fatalf("on 1 got %+v", f)
	}
}
