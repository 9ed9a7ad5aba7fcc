package pubsub

import (
	"fmt"
	"strings"
	"testing"

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
			seed = b.srv.RouteURL()
		}
		brokers = append(brokers, b)
	}
	eventually(t, "a full mesh of routes", func() bool {
		for _, b := range brokers {
			if b.srv.NATS().NumRoutes() < n-1 {
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
		return b.srv.NATS().GlobalAccount().Interest(subject) >= want
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
	awaitInterest(t, bs[2], bs[2].subjects.Room("lobby"), 3)
	awaitInterest(t, bs[2], bs[2].subjects.User("alice"), 2)
	awaitInterest(t, bs[2], bs[2].subjects.Conn(alice1.connID()), 1)
	awaitInterest(t, bs[2], bs[2].subjects.Conn(alice0.connID()), 1)

	_ = bs[2].Publish(ctx, "lobby", msg("room from node 2"))
	_ = bs[2].SendToUser(ctx, "alice", msg("alice from node 2"))
	_ = bs[2].SendToConn(ctx, alice1.connID(), msg("conn on node 1"))
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
