// Package pubsub makes real-time a sibling of HTTP in a net/http app.
//
// New starts a broker on an embedded, in-process NATS server (or on a NATS
// server or cluster the host names). Handler is a plain http.Handler that
// upgrades to WebSocket or serves Server-Sent Events on one path, behind the
// host's own middleware: the user that middleware stored with
// ContextWithUser is the connection's identity. Go code then publishes to a
// room, to every connection of a user on any instance, or to one
// connection:
//
//	ps, err := pubsub.New()
//	if err != nil { ... }
//	defer ps.Close()
//	mux.Handle("/live", requireLogin(ps.Handler()))
//	ps.Publish(ctx, "lobby", []byte(`{"text":"hi"}`))
//
// Messages are JSON values. PROTOCOL.md in the repository describes every
// frame a client sends and receives; ARCHITECTURE.md, where each part of
// the engine lives.
package pubsub

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/control"
	"github.com/roomcast/pubsub/internal/fanout"
	"github.com/roomcast/pubsub/internal/history"
	"github.com/roomcast/pubsub/internal/inbox"
	"github.com/roomcast/pubsub/internal/lograte"
	"github.com/roomcast/pubsub/internal/presence"
	"github.com/roomcast/pubsub/internal/stats"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Broker routes messages between Go code and connected clients through NATS.
// All methods are safe for concurrent use.
//
// The broker wires the engines together: the fan-out engine
// (internal/fanout) between NATS and local connections, the history store
// (internal/history, nil without history), presence (internal/presence).
// It keeps the registry of local connections and their lifecycle.
type Broker struct {
	cfg      config
	log      *slog.Logger
	nc       *nats.Conn
	ownsConn bool
	srv      *embedded.Server
	subjects subject.Space
	instance string
	fan      *fanout.Engine
	hist     *history.Store // nil without history
	pres     *presence.Tracker
	stats    *stats.Set         // nil with WithoutStats
	statsSub *nats.Subscription // answers ClusterStats
	ctl      *control.Plane     // operations on connections across instances
	handlers callHandlers       // call handlers running (call.go)
	inbox    *inbox.Store       // nil without WithInbox
	inboxes  *inboxes           // this instance's inbox readers
	logLimit *lograte.Limiter   // repeated causes (a misconfigured path) log once a minute
	logNoisy *lograte.Limiter   // events that come in bursts (slow consumers, refused requests) once in 10 s
	ready    readiness          // Ready's cached answer

	msgSeq  atomic.Uint64
	connSeq atomic.Uint64

	mu      sync.RWMutex
	closing bool
	conns   map[string]*Conn // local connections, by id

	connsWG  sync.WaitGroup // one per accepted connection
	shutdown chan struct{}  // closed when Shutdown has finished
	once     sync.Once
}

// New returns a running broker. Without options it starts an embedded NATS
// server in-process; see WithNATSURL and WithNATSConn to scale out.
func New(opts ...Option) (*Broker, error) {
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:      cfg,
		log:      cfg.logger,
		subjects: subject.New(cfg.namespace),
		instance: randomID(10),
		conns:    make(map[string]*Conn),
		shutdown: make(chan struct{}),
		logLimit: lograte.New(misconfiguredEvery),
		logNoisy: lograte.New(10 * time.Second),
	}
	if !cfg.noStats {
		b.stats = stats.NewSet()
	}
	if err := b.connect(); err != nil {
		b.mu.Lock()
		b.closing = true // no "connection lost" line for our own teardown
		b.mu.Unlock()
		b.teardownNATS()
		return nil, fmt.Errorf("pubsub: connecting to NATS: %w", err)
	}
	b.fan.Start()
	return b, nil
}

// connect reaches NATS (embedded, by URL, or the host's connection) and
// starts the engines on it.
func (b *Broker) connect() error {
	cfg := b.cfg
	natsOpts := []nats.Option{
		nats.Name("roomcast-" + b.instance),
		nats.ErrorHandler(b.natsError),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if b.isClosing() {
				return // our own Close
			}
			b.log.Warn("pubsub: NATS connection lost; reconnecting (live delivery pauses, history rooms resume from the store)", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Warn("pubsub: NATS connection back", "server", nc.ConnectedUrlRedacted())
			if b.inboxes != nil {
				b.inboxes.cue("", 0) // cues may have been lost meanwhile
			}
		}),
	}
	var err error
	switch {
	case cfg.nc != nil:
		b.nc = cfg.nc
	case cfg.natsURL != "":
		natsOpts = append(natsOpts, nats.MaxReconnects(-1))
		b.nc, err = nats.Connect(cfg.natsURL, append(natsOpts, cfg.natsOpts...)...)
		b.ownsConn = true
	default:
		eo := cfg.embedded
		if eo.Logger == nil {
			eo.Logger = cfg.logger
		}
		// A leaf node uses the JetStream of the system it joins, shared by
		// every instance; a local one would keep each instance's history apart.
		if (len(cfg.history) > 0 || cfg.inbox != nil) && len(eo.LeafRemotes) == 0 {
			eo.JetStream = true
			if cfg.storeDir != "" {
				eo.StoreDir = cfg.storeDir
			}
		}
		if b.srv, err = embedded.Start(eo); err == nil {
			b.nc, err = b.srv.Connect(natsOpts...)
			b.ownsConn = true
		}
	}
	if err != nil {
		return err
	}
	if len(cfg.history) > 0 {
		// Memory only for a store of this instance's own: a shared one (a
		// hub's, a cluster's) outlives it and may be shared with instances
		// that connect by URL.
		ownStore := b.srv != nil && len(cfg.embedded.LeafRemotes) == 0
		hc := history.Config{
			NC: b.nc, Log: b.log, Subjects: b.subjects, Namespace: cfg.namespace, Rules: cfg.history,
			File: !ownStore || cfg.storeDir != "", Replicas: cfg.historyReplicas, Domain: cfg.jsDomain,
			Stats: b.stats, MaxBytes: cfg.historyBytes,
		}
		if ownStore {
			if err := b.sizeOwnStore(&hc); err != nil {
				return err
			}
		}
		b.hist, err = history.Open(hc)
		if err != nil {
			return err
		}
	}
	if cfg.inbox != nil {
		ownStore := b.srv != nil && len(cfg.embedded.LeafRemotes) == 0
		if b.inbox, err = inbox.Open(inbox.Config{
			NC: b.nc, Subjects: b.subjects, Namespace: cfg.namespace, Messages: cfg.inbox.Messages, MaxAge: cfg.inbox.MaxAge,
			File: !ownStore || cfg.storeDir != "", Replicas: cfg.historyReplicas, Domain: cfg.jsDomain,
		}); err != nil {
			return err
		}
		if err = b.startInboxes(); err != nil {
			return err
		}
	}
	fc := fanout.Config{
		NC: b.nc, Log: b.log, DirectSubject: b.subjects.ConnWildcard(b.instance), Direct: b.deliverToConn,
		SubscribeTimeout: cfg.writeTimeout, Stats: b.stats,
	}
	if b.hist != nil {
		fc.Store = b.hist
	}
	if b.fan, err = fanout.New(fc); err != nil {
		return err
	}
	if b.statsSub, err = b.nc.Subscribe(b.subjects.Stats(), b.answerStats); err != nil {
		return err
	}
	if err = b.nc.FlushTimeout(10 * time.Second); err != nil {
		return err
	}
	b.pres = presence.New(presence.Config{
		NC: b.nc, Log: b.log, Subjects: b.subjects, Instance: b.instance,
		Timeout: cfg.presenceTimeout, FlushTimeout: cfg.writeTimeout,
	})
	if b.ctl, err = control.Start(control.Config{
		NC: b.nc, Subjects: b.subjects, Instance: b.instance, Handle: b.applyControl, Instances: b.pres.Instances,
	}); err != nil {
		return err
	}
	return b.pres.Start()
}

// natsError logs what the NATS connection reports: a slow consumer (this
// instance cannot keep up with what NATS sends it, and NATS drops
// messages) at Warn, anything else at Error; a burst once in 10 s.
func (b *Broker) natsError(_ *nats.Conn, sub *nats.Subscription, err error) {
	subj := ""
	if sub != nil {
		subj = sub.Subject
	}
	ok, suppressed := b.logNoisy.Allow("nats:" + err.Error())
	switch {
	case !ok:
	case errors.Is(err, nats.ErrSlowConsumer):
		b.log.Warn("pubsub: NATS is dropping messages for this instance: it cannot keep up (slow consumer)", "subject", subj, "suppressed", suppressed)
	default:
		b.log.Error("pubsub: NATS error", "subject", subj, "err", err, "suppressed", suppressed)
	}
}

// deliverToConn queues a message addressed to one local connection.
func (b *Broker) deliverToConn(counter string, f *wire.Frame) {
	b.mu.RLock()
	c := b.conns[subject.ConnID(b.instance, counter)]
	b.mu.RUnlock()
	switch {
	case c == nil:
	case c.out.Enqueue(f):
		b.stats.Delivered(1)
	default:
		c.closeSlow()
	}
}

// register adds an accepted connection, or fails if the broker is closing.
func (b *Broker) register(c *Conn) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return ErrClosed
	}
	b.conns[c.id] = c
	b.connsWG.Add(1)
	b.stats.Connected(c.ws != nil, 1)
	return nil
}

func (b *Broker) isClosing() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.closing
}

func (b *Broker) unregister(c *Conn) {
	b.mu.Lock()
	_, ok := b.conns[c.id]
	delete(b.conns, c.id)
	b.mu.Unlock()
	if ok {
		b.stats.Connected(c.ws != nil, -1)
	}
}

// Shutdown stops accepting connections, asks every WebSocket client to
// reconnect elsewhere (close code 1012) and ends every SSE stream after
// writing what is already queued, then disconnects from NATS and stops the
// embedded server. If ctx ends first, the remaining connections are closed
// at once; Shutdown still returns only when all of its goroutines are done,
// with ctx's error.
func (b *Broker) Shutdown(ctx context.Context) error {
	var err error
	b.once.Do(func() {
		err = b.shutdownNow(ctx)
		close(b.shutdown)
	})
	<-b.shutdown
	return err
}

// Close is Shutdown with a five-second grace period.
func (b *Broker) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := b.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // every connection was closed anyway
	}
	return err
}

func (b *Broker) shutdownNow(ctx context.Context) error {
	b.mu.Lock()
	b.closing = true
	conns := make([]*Conn, 0, len(b.conns))
	for _, c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	b.fan.Close()
	b.pres.Close()

	for _, c := range conns {
		c.closeWith(CloseServiceRestart, "service restart", ErrClosed, true)
	}
	done := make(chan struct{})
	go func() { b.connsWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range conns {
			if c.isDone() {
				continue
			}
			c.abort()
			if c.finishUndriven() {
				b.log.Warn("pubsub: a connection from Accept was never driven (Messages or Wait)", "conn", c.id)
			}
		}
		<-done
	}
	// Call handlers that ignore their context: waited for as long as ctx
	// allows, then left behind with one line naming them.
	handlers := make(chan struct{})
	go func() { b.handlers.Wait(); close(handlers) }()
	select {
	case <-handlers:
	case <-ctx.Done():
		b.log.Error("pubsub: call handlers still running at shutdown: they must return when their context ends", "methods", b.handlers.running())
		err = ctx.Err()
	}
	b.fan.Stop()
	b.pres.Shutdown()
	b.teardownNATS()
	return err
}

func (b *Broker) teardownNATS() {
	if b.nc != nil {
		if b.pres != nil {
			b.pres.Unsubscribe()
		}
		if b.statsSub != nil {
			_ = b.statsSub.Unsubscribe()
		}
		if b.ctl != nil {
			b.ctl.Stop()
		}
		if b.inboxes != nil {
			_ = b.inboxes.cues.Unsubscribe()
		}
		if b.fan != nil {
			b.fan.Stop()
		}
		if b.ownsConn {
			b.nc.Close()
		}
	}
	if b.srv != nil {
		b.srv.Shutdown()
	}
}

func randomID(n int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	for i, v := range buf {
		buf[i] = alphabet[int(v)%len(alphabet)]
	}
	return string(buf)
}

// truncate keeps hostile input out of error messages and logs at full size.
func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	cut := 64
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
