// Package control carries server-side operations on connections between
// instances, on core NATS: subscribe a connection to a room, take it out,
// end it, extend its session, list a user's connections.
//
// An operation on one connection goes to the instance its id names (each
// instance answers on its own subject), so a missing instance is a
// no-responders error: the connection is known to be gone. An operation on
// a user goes to every instance, which each answer for their own
// connections of that user; the caller waits for as many answers as it
// knows live instances, or its deadline.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/internal/subject"
)

// Op kinds.
const (
	Subscribe   = "subscribe"
	Unsubscribe = "unsubscribe"
	Disconnect  = "disconnect"
	Conns       = "conns"
	Refresh     = "refresh"
	// Frame: a client frame POSTed to the mount path for the connection
	// Conn of User (an SSE client's actions): handled as if it came on
	// the connection, its answers queued there.
	Frame = "frame"
)

// Request is one operation, on the connection Conn or on every connection
// of User (for Refresh, both: the connection must be the user's).
type Request struct {
	Op      string          `json:"op"`
	Conn    string          `json:"conn,omitempty"`
	User    string          `json:"user,omitempty"`
	Room    string          `json:"room,omitempty"`
	Code    int             `json:"code,omitempty"`
	Reason  string          `json:"reason,omitempty"`
	Expires int64           `json:"expires,omitempty"` // Refresh: the new expiry, Unix milliseconds; 0 removes it
	Frame   json.RawMessage `json:"frame,omitempty"`   // Frame: the client frame
}

// Reply is one instance's answer.
type Reply struct {
	N       int    `json:"n"`                 // connections the operation changed
	Expires int64  `json:"expires,omitempty"` // Refresh: the connection's expiry now, Unix milliseconds; 0 for none
	Conns   []Info `json:"conns,omitempty"`
	Err     string `json:"err,omitempty"` // one of the Err codes
}

// Reply error codes.
const (
	ErrNoSuchConn = "no_such_conn"
	ErrNotOwner   = "not_owner" // Refresh: the connection is another user's
	ErrBusy       = "busy"      // Frame: the connection is handling another POSTed frame
	ErrTooMany    = "too_many_rooms"
	ErrInternal   = "internal"
)

// Info describes one connection.
type Info struct {
	ID        string   `json:"id"`
	Instance  string   `json:"instance"`
	User      string   `json:"user"`
	Transport string   `json:"transport"`
	Rooms     []string `json:"rooms"`
	Since     int64    `json:"since"`             // Unix milliseconds
	Expires   int64    `json:"expires,omitempty"` // Unix milliseconds
}

// Handler applies a request to this instance's connections.
type Handler func(Request) Reply

// Config wires a Plane.
type Config struct {
	NC       *nats.Conn
	Subjects subject.Space
	Instance string
	Handle   Handler
	// Instances is how many instances are alive (presence's heartbeats):
	// how many answers an operation on a user waits for.
	Instances func() int
}

// Plane sends operations and answers them for this instance.
type Plane struct {
	cfg     Config
	subs    []*nats.Subscription
	slots   chan struct{}  // operations answered at once (a frame may wait for the store)
	busy    sync.WaitGroup // their goroutines
	mu      sync.Mutex
	stopped bool // no new answers: Stop waits for the ones under way
}

// Concurrent is how many operations an instance answers at once; more
// wait in NATS's queue for the subscription.
const Concurrent = 64

// Start subscribes to this instance's subject and the all-instances one.
func Start(cfg Config) (*Plane, error) {
	p := &Plane{cfg: cfg, slots: make(chan struct{}, Concurrent)}
	for _, s := range []string{cfg.Subjects.Control(cfg.Instance), cfg.Subjects.ControlAll()} {
		sub, err := cfg.NC.Subscribe(s, p.answer)
		if err != nil {
			p.Stop()
			return nil, err
		}
		p.subs = append(p.subs, sub)
	}
	return p, nil
}

// Stop stops answering and waits for the answers under way.
func (p *Plane) Stop() {
	for _, s := range p.subs {
		_ = s.Unsubscribe()
	}
	p.subs = nil
	p.mu.Lock()
	p.stopped = true // a callback still running adds nothing after this
	p.mu.Unlock()
	p.busy.Wait()
}

// answer handles one request in a goroutine of its own, at most
// Concurrent at once: a frame may wait seconds for the store, and must
// not hold the others.
func (p *Plane) answer(m *nats.Msg) {
	p.slots <- struct{}{}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		<-p.slots
		return
	}
	p.busy.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.busy.Done()
		defer func() { <-p.slots }()
		var req Request
		var rep Reply
		if err := json.Unmarshal(m.Data, &req); err != nil {
			rep.Err = ErrInternal
		} else {
			rep = p.cfg.Handle(req)
		}
		data, _ := json.Marshal(rep)
		_ = m.Respond(data)
	}()
}

// ErrGone: no instance answers for the connection's id: it is gone.
var ErrGone = errors.New("no instance answers for the connection")

// ToConn sends req to the instance that holds req.Conn and returns its
// reply. An instance that is not there is ErrGone; one that does not
// answer, ctx's error.
func (p *Plane) ToConn(ctx context.Context, req Request) (Reply, error) {
	instance, _, err := subject.ParseConnID(req.Conn)
	if err != nil {
		return Reply{}, err
	}
	if instance == p.cfg.Instance { // no round trip for our own
		return p.cfg.Handle(req), nil
	}
	data, _ := json.Marshal(req)
	m, err := p.cfg.NC.RequestWithContext(ctx, p.cfg.Subjects.Control(instance), data)
	if errors.Is(err, nats.ErrNoResponders) {
		return Reply{}, ErrGone
	}
	if err != nil {
		return Reply{}, err
	}
	var rep Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return Reply{}, fmt.Errorf("a malformed control reply: %w", err)
	}
	return rep, nil
}

// ToAll sends req to every instance and returns the replies that came
// before all known instances answered or ctx ended; then err says how many
// were missing, wrapping ctx's error.
func (p *Plane) ToAll(ctx context.Context, req Request) ([]Reply, error) {
	nc := p.cfg.NC
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	data, _ := json.Marshal(req)
	if err := nc.PublishRequest(p.cfg.Subjects.ControlAll(), inbox, data); err != nil {
		return nil, err
	}
	want := p.cfg.Instances()
	var all []Reply
	for len(all) < want {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return all, fmt.Errorf("%d of %d instances answered: %w", len(all), want, err)
		}
		var rep Reply
		if json.Unmarshal(m.Data, &rep) == nil {
			all = append(all, rep)
		}
	}
	return all, nil
}
