package pubsub

import (
	"errors"

	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/subject"
)

// Hooks for the black-box tests of package pubsub_test: what they observe
// or break of a broker that its public API does not show.

// ConnCount is the number of local connections.
func ConnCount(b *Broker) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.conns)
}

// TopicCount is the number of NATS subscriptions the fan-out holds for
// rooms and users.
func TopicCount(b *Broker) int { return b.fan.Topics() }

// EmbeddedServer is the broker's embedded NATS server (nil on an external
// one).
func EmbeddedServer(b *Broker) *embedded.Server { return b.srv }

// RoomSubject is the NATS subject a room's subscribers listen on (its live
// subject, with history).
func RoomSubject(b *Broker, room string) string { return b.roomSubject(room) }

// Subjects is the broker's subject space, to wait for NATS interest.
func Subjects(b *Broker) subject.Space { return b.subjects }

// Dispatched reports whether the messages NATS delivered for room (at
// least n) have all been fanned out to the local connections.
func Dispatched(b *Broker, room string, n int) bool {
	return b.fan.Dispatched(b.roomSubject(room), n)
}

// Crash cuts every connection and stops the embedded NATS server, as a
// killed process would: no close frames, no goodbye to the cluster.
func Crash(b *Broker) {
	b.srv.NATS().Shutdown()
	b.mu.RLock()
	conns := make([]*Conn, 0, len(b.conns))
	for _, c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.RUnlock()
	for _, c := range conns {
		c.abortTransport()
	}
}

// FlushNATS waits until the NATS server has processed everything the
// broker sent it (subscriptions, unsubscriptions).
func FlushNATS(b *Broker) error { return b.nc.Flush() }

// MissLive runs meanwhile while this instance does not receive room's live
// messages (its subscription is dropped, as when a route reconnects): the
// next one it receives shows the gap, which the fan-out repairs from
// history.
func MissLive(b *Broker, room string, meanwhile func()) error {
	t := b.fan.Lookup(b.roomSubject(room))
	if t == nil {
		return errors.New("no local subscriber in " + room)
	}
	return b.fan.Resubscribe(t, meanwhile)
}

// Instances is how many instances b knows to be alive.
func Instances(b *Broker) int { return b.pres.Instances() }

// InstanceID is b's instance id, the first part of its connection ids.
func InstanceID(b *Broker) string { return b.instance }
