// Package pubsub makes real-time a sibling of HTTP in a net/http app.
//
// New starts a broker on an embedded, in-process NATS server (or on a NATS
// server or cluster the host names). Handler is a plain http.Handler that
// upgrades to WebSocket or serves Server-Sent Events on one path, behind the
// host's own middleware: the user that middleware stored with ContextWithUser is the
// connection's identity. Go code then publishes to a room, to every
// connection of a user on any instance, or to one connection:
//
//	ps, err := pubsub.New()
//	if err != nil { ... }
//	defer ps.Close()
//	mux.Handle("/live", requireLogin(ps.Handler()))
//	ps.Publish(ctx, "lobby", []byte(`{"text":"hi"}`))
//
// Messages are JSON values. PROTOCOL.md in the repository describes every
// frame a client sends and receives.
package pubsub

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/lograte"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Errors returned by the broker and its connections. Wrapped errors carry
// detail; test for these with errors.Is.
var (
	// ErrClosed: the broker or the connection is closed.
	ErrClosed = errors.New("pubsub: closed")
	// ErrInvalidRoom: a room name breaks the rules in PROTOCOL.md
	// (1–128 bytes of printable UTF-8, no whitespace, ".", "*", ">" or leading "$").
	ErrInvalidRoom = errors.New("pubsub: invalid room name")
	// ErrInvalidUser: a user id is empty, longer than 256 bytes or not printable UTF-8.
	ErrInvalidUser = errors.New("pubsub: invalid user id")
	// ErrInvalidConnID: a connection id was not issued by a broker.
	ErrInvalidConnID = errors.New("pubsub: invalid connection id")
	// ErrInvalidData: a message is not a single valid JSON value.
	ErrInvalidData = errors.New("pubsub: message data is not valid JSON")
	// ErrTooLarge: a message exceeds the maximum message size.
	ErrTooLarge = errors.New("pubsub: message too large")
	// ErrForbidden: an authorization hook denied the operation.
	ErrForbidden = errors.New("pubsub: forbidden")
	// ErrTooManyRooms: a connection reached its room limit.
	ErrTooManyRooms = errors.New("pubsub: too many rooms on one connection")
	// ErrSlowConsumer: a connection was closed because its send queue overflowed.
	ErrSlowConsumer = errors.New("pubsub: slow consumer")
	// ErrUnsupportedTransport: a request to Accept is neither a WebSocket
	// upgrade nor a GET that accepts text/event-stream.
	ErrUnsupportedTransport = errors.New("pubsub: request is neither WebSocket nor SSE")
)

// AuthorizeFunc decides whether a connection may act on a room. It receives
// the connection's context (the upgrade request's context and all values the
// host's middleware stored in it) and the user from ContextWithUser ("" if
// anonymous). Returning nil allows; any error denies. The error is logged;
// the client gets the code "forbidden" (the error's text is not sent, so
// internal details cannot leak).
type AuthorizeFunc func(ctx context.Context, user, room string) error

// Option configures a Broker. The zero configuration (no options) is a
// working broker on an in-process NATS server.
type Option func(*config)

type config struct {
	logger          *slog.Logger
	nc              *nats.Conn
	natsURL         string
	natsOpts        []nats.Option
	embedded        embedded.Options
	namespace       string
	authSubscribe   AuthorizeFunc
	authPublish     AuthorizeFunc
	originPatterns  []string
	maxMessage      int
	queueMessages   int
	queueBytes      int
	writeTimeout    time.Duration
	keepAlive       time.Duration
	pongTimeout     time.Duration
	maxRooms        int
	history         []historyRule
	storeDir        string
	presenceTimeout time.Duration
	historyReplicas int
	jsDomain        string
	holdRequests    bool
}

// Defaults, documented on the options that change them.
const (
	DefaultMaxMessageSize = 64 << 10
	DefaultQueueMessages  = 1024
	DefaultQueueBytes     = 4 << 20
	DefaultWriteTimeout   = 10 * time.Second
	DefaultKeepAlive      = 15 * time.Second
	DefaultPongTimeout    = 10 * time.Second
	DefaultMaxRooms       = 256
	DefaultNamespace      = "roomcast"
)

// WithLogger sets the logger for the broker and its embedded NATS server.
// Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithNATSConn runs the broker on an existing NATS connection instead of an
// embedded server: the scale-out path, where every instance of the app
// connects to the same NATS cluster. The broker does not close nc.
func WithNATSConn(nc *nats.Conn) Option { return func(c *config) { c.nc = nc } }

// WithNATSURL makes the broker connect to the NATS server(s) at url (a
// comma-separated list is allowed) instead of starting an embedded server.
// opts are passed to nats.Connect after the broker's own (which reconnect
// forever). The broker closes this connection on Close.
func WithNATSURL(url string, opts ...nats.Option) Option {
	return func(c *config) { c.natsURL, c.natsOpts = url, opts }
}

// WithEmbedded configures the embedded NATS server (ignored when
// WithNATSConn or WithNATSURL is given).
func WithEmbedded(o embedded.Options) Option { return func(c *config) { c.embedded = o } }

// WithNamespace sets the first token of every NATS subject the broker uses,
// so several apps can share one NATS cluster. Brokers that must talk to
// each other need the same namespace. Default "roomcast".
func WithNamespace(ns string) Option { return func(c *config) { c.namespace = ns } }

// WithSubscribeAuth sets the hook that authorizes every client subscription:
// rooms in the query string and subscribe frames. Default: every room is
// allowed. Rooms joined by server code (Conn.Join) are not checked.
func WithSubscribeAuth(f AuthorizeFunc) Option { return func(c *config) { c.authSubscribe = f } }

// WithClientPublish lets WebSocket clients publish to rooms, each publish
// authorized by f (which may simply return nil). Without this option client
// publish frames are refused with "forbidden".
func WithClientPublish(f AuthorizeFunc) Option { return func(c *config) { c.authPublish = f } }

// WithOriginPatterns allows cross-origin WebSocket and SSE requests from the
// given host patterns (path.Match syntax, e.g. "*.example.com"). By default
// a browser request whose Origin is not the request's own host is refused
// with 403, which prevents cross-site WebSocket hijacking.
func WithOriginPatterns(patterns ...string) Option {
	return func(c *config) { c.originPatterns = patterns }
}

// WithMaxMessageSize bounds a client frame and a message's data, in bytes.
// A larger WebSocket frame closes the connection with 1009; a larger
// Publish returns ErrTooLarge. Default 64 KiB.
func WithMaxMessageSize(n int) Option { return func(c *config) { c.maxMessage = n } }

// WithSendQueue bounds each connection's queue of frames not yet written,
// by count and by bytes. A connection that falls further behind is closed
// with code 4001 (slow consumer) so it never delays others. Default 1024
// frames, 4 MiB.
func WithSendQueue(frames, bytes int) Option {
	return func(c *config) { c.queueMessages, c.queueBytes = frames, bytes }
}

// WithWriteTimeout bounds every write to a client. Default 10s.
func WithWriteTimeout(d time.Duration) Option { return func(c *config) { c.writeTimeout = d } }

// WithKeepAlive sets how often an idle connection is checked: a WebSocket
// ping that must be answered within timeout, or an SSE comment line. A
// WebSocket peer that does not answer is closed with 4000. Default 15s, 10s.
func WithKeepAlive(interval, timeout time.Duration) Option {
	return func(c *config) { c.keepAlive, c.pongTimeout = interval, timeout }
}

// WithHoldRequests makes Handler return only when each connection ends, so
// that the host's access log and request metrics see a live connection as
// what it is: an SSE stream is then written through the host's
// ResponseWriter (its real status, bytes and duration are logged), and a
// WebSocket's request lasts as long as the connection (its duration is
// logged; its 101 is written by the broker beneath the host's writers, so
// they never see a status, and a hijacked connection's bytes are never
// counted).
//
// By default the broker takes HTTP/1.x connections over and its handler
// returns at once: the access log records the handshake only (a duration
// of microseconds, 0 bytes, and the logger's default status). That saves
// memory: measured at 5,000 idle connections, an SSE stream costs about
// 11.5 KiB taken over and 29 KiB held, a WebSocket 13.5 KiB and 25 KiB
// (README, "Works with").
func WithHoldRequests() Option { return func(c *config) { c.holdRequests = true } }

// WithMaxRooms bounds the rooms one connection may be in. Default 256.
func WithMaxRooms(n int) Option { return func(c *config) { c.maxRooms = n } }

// Broker routes messages between Go code and connected clients through NATS.
// All methods are safe for concurrent use.
type Broker struct {
	cfg      config
	log      *slog.Logger
	nc       *nats.Conn
	ownsConn bool
	srv      *embedded.Server
	subjects subject.Space
	instance string
	hist     *historyStore // nil without history
	pres     *presence

	msgSeq  atomic.Uint64
	connSeq atomic.Uint64

	mu      sync.RWMutex
	closing bool
	topics  map[string]*topic // by subject
	conns   map[string]*Conn  // local connections, by id

	inbox        chan *nats.Msg // every subscription delivers here
	connSub      *nats.Subscription
	stopDispatch chan struct{}
	dispatchDone chan struct{}

	connsWG  sync.WaitGroup // one per accepted connection
	shutdown chan struct{}  // closed when Shutdown has finished
	once     sync.Once

	logLimit *lograte.Limiter // repeated causes (a misconfigured path) log once a minute
}

// inboxSize bounds the messages received from NATS and not yet fanned out.
// Fan-out only enqueues (tens of nanoseconds per connection), so this is a
// burst buffer; when it is full nats.go drops and reports a slow consumer.
const inboxSize = 1 << 16

// New returns a running broker. Without options it starts an embedded NATS
// server in-process; see WithNATSURL and WithNATSConn to scale out.
func New(opts ...Option) (*Broker, error) {
	cfg := config{
		namespace:       DefaultNamespace,
		maxMessage:      DefaultMaxMessageSize,
		queueMessages:   DefaultQueueMessages,
		queueBytes:      DefaultQueueBytes,
		writeTimeout:    DefaultWriteTimeout,
		keepAlive:       DefaultKeepAlive,
		pongTimeout:     DefaultPongTimeout,
		maxRooms:        DefaultMaxRooms,
		presenceTimeout: DefaultPresenceTimeout,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if err := subject.ValidNamespace(cfg.namespace); err != nil {
		return nil, fmt.Errorf("pubsub: %w", err)
	}
	if cfg.maxMessage <= 0 || cfg.queueMessages <= 0 || cfg.queueBytes <= 0 || cfg.writeTimeout <= 0 ||
		cfg.keepAlive <= 0 || cfg.pongTimeout <= 0 || cfg.maxRooms <= 0 {
		return nil, errors.New("pubsub: sizes, limits and durations in options must be positive")
	}
	if cfg.jsDomain != "" && subject.ValidNamespace(cfg.jsDomain) != nil {
		return nil, fmt.Errorf("pubsub: JetStream domain %q must be 1-32 characters of [A-Za-z0-9_-]", truncate(cfg.jsDomain))
	}
	if cfg.presenceTimeout < 300*time.Millisecond {
		return nil, errors.New("pubsub: the presence timeout must be at least 300ms")
	}
	if cfg.historyReplicas < 0 || cfg.historyReplicas > 5 {
		return nil, errors.New("pubsub: history replicas must be 1 to 5")
	}
	if err := validateHistory(cfg.history); err != nil {
		return nil, err
	}

	b := &Broker{
		cfg:          cfg,
		log:          cfg.logger,
		subjects:     subject.New(cfg.namespace),
		instance:     randomID(10),
		topics:       make(map[string]*topic),
		conns:        make(map[string]*Conn),
		inbox:        make(chan *nats.Msg, inboxSize),
		stopDispatch: make(chan struct{}),
		dispatchDone: make(chan struct{}),
		shutdown:     make(chan struct{}),
		logLimit:     lograte.New(misconfiguredEvery),
	}
	b.pres = newPresence(b)
	natsOpts := []nats.Option{
		nats.Name("roomcast-" + b.instance),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			b.log.Error("pubsub: nats error", "subject", subj, "err", err)
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
		if len(cfg.history) > 0 && len(eo.LeafRemotes) == 0 {
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
	if err == nil {
		// Every connection-targeted message for this instance arrives on one
		// subscription; the connection is found by the subject's last token.
		b.connSub, err = b.nc.ChanSubscribe(b.subjects.ConnWildcard(b.instance), b.inbox)
	}
	if err == nil {
		err = b.nc.FlushTimeout(10 * time.Second)
	}
	if err == nil && len(cfg.history) > 0 {
		// Memory only for a store of this instance's own: a shared one (a
		// hub's, a cluster's) outlives it and may be shared with instances
		// that connect by URL.
		ownStore := b.srv != nil && len(cfg.embedded.LeafRemotes) == 0
		err = b.openHistory(!ownStore || cfg.storeDir != "")
	}
	if err == nil {
		err = b.pres.start()
	}
	if err != nil {
		b.teardownNATS()
		return nil, fmt.Errorf("pubsub: connecting to NATS: %w", err)
	}
	go b.dispatch()
	return b, nil
}

// Publish sends data, one JSON value, to every connection in room, on every
// instance. For a room without history it returns once NATS has the message
// and delivery is at most once; for a room with history (WithHistory) it
// returns once the message is stored, and clients that reconnect get it.
// PublishAck also reports the message's id.
func (b *Broker) Publish(ctx context.Context, room string, data []byte) error {
	if err := subject.ValidRoom(room); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	_, err := b.publishRoom(ctx, room, "", data)
	return err
}

// SendToUser sends data to every connection of user, on every instance.
func (b *Broker) SendToUser(ctx context.Context, user string, data []byte) error {
	if err := subject.ValidUser(user); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidUser, truncate(user), err)
	}
	_, err := b.send(ctx, b.subjects.User(user), "", data)
	return err
}

// SendToConn sends data to the one connection with id connID (see Conn.ID
// and the "welcome" frame), whichever instance holds it. Like every send it
// is fire-and-forget: a connection that has gone away is not reported.
func (b *Broker) SendToConn(ctx context.Context, connID string, data []byte) error {
	if _, _, err := subject.ParseConnID(connID); err != nil {
		return fmt.Errorf("%w %q", ErrInvalidConnID, truncate(connID))
	}
	_, err := b.send(ctx, b.subjects.Conn(connID), "", data)
	return err
}

// send publishes data on subj and returns the message id.
func (b *Broker) send(ctx context.Context, subj, from string, data []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	data, err := b.checkData(data)
	if err != nil {
		return "", err
	}
	id := b.nextMessageID()
	payload := wire.AppendEnvelope(make([]byte, 0, 32+len(from)+len(data)), wire.Envelope{ID: id, From: from, Data: data})
	if err := b.nc.Publish(subj, payload); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return "", ErrClosed
		}
		return "", fmt.Errorf("pubsub: publish: %w", err)
	}
	return id, nil
}

// checkData returns data as one compact JSON value within the size limit.
func (b *Broker) checkData(data []byte) ([]byte, error) {
	if len(data) > b.cfg.maxMessage {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), b.cfg.maxMessage)
	}
	data, ok := wire.CompactJSON(data)
	if !ok {
		return nil, ErrInvalidData
	}
	return data, nil
}

func (b *Broker) nextMessageID() string {
	return b.instance + "-" + strconv.FormatUint(b.msgSeq.Add(1), 36)
}

// topic is one NATS subscription shared by all local connections in a room,
// or by all local connections of a user.
type topic struct {
	subject  string
	kind     int    // wire.KindRoom or wire.KindUser
	name     string // room name or user id
	sub      *nats.Subscription
	refs     int                 // guarded by Broker.mu
	ready    chan struct{}       // closed once the server has the subscription
	err      error               // set before ready is closed
	lastSeq  uint64              // of a room with history: the last position delivered (dispatcher only)
	repaired map[uint64]struct{} // positions a repair delivered ahead of their live copy

	mu      sync.RWMutex
	members map[*Conn]struct{}
}

// acquire returns the topic for subj, subscribing on first use, once the
// NATS server has the subscription: a message published after acquire
// returns reaches it.
func (b *Broker) acquire(kind int, name, subj string) (*topic, error) {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	t := b.topics[subj]
	created := t == nil
	if created {
		sub, err := b.nc.ChanSubscribe(subj, b.inbox)
		if err != nil {
			b.mu.Unlock()
			return nil, fmt.Errorf("pubsub: subscribe: %w", err)
		}
		t = &topic{subject: subj, kind: kind, name: name, sub: sub, ready: make(chan struct{}), members: make(map[*Conn]struct{})}
		b.topics[subj] = t
	}
	t.refs++
	b.mu.Unlock()
	if created {
		t.err = b.nc.FlushTimeout(b.cfg.writeTimeout)
		close(t.ready)
	}
	<-t.ready
	if t.err != nil {
		b.release(t)
		return nil, fmt.Errorf("pubsub: subscribe: %w", t.err)
	}
	return t, nil
}

// release drops one reference to t, unsubscribing when none is left.
func (b *Broker) release(t *topic) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.refs--; t.refs == 0 {
		delete(b.topics, t.subject)
		_ = t.sub.Unsubscribe()
	}
}

// dispatch fans every message from NATS out to local connections. One
// goroutine keeps the order NATS delivered in across all subjects, and fan-out
// only enqueues, so a slow client never delays it.
func (b *Broker) dispatch() {
	defer close(b.dispatchDone)
	var slow []*Conn
	for {
		var m *nats.Msg
		select {
		case m = <-b.inbox:
		case <-b.stopDispatch:
			return
		}
		env, err := wire.ParseEnvelope(m.Data)
		if err == nil {
			var ok bool
			env.Data, ok = wire.CompactJSON(env.Data)
			if !ok || len(env.Data) == 0 {
				err = ErrInvalidData
			}
		}
		if err != nil {
			b.log.Warn("pubsub: dropping malformed message", "subject", m.Subject, "err", err)
			continue
		}
		stored := env.ID == ""
		var prev uint64
		if stored { // stored, then republished by the history stream
			env.ID = m.Header.Get(jetstream.SequenceHeader)
			prev, _ = strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
		}
		if m.Sub == b.connSub {
			b.deliverToConn(m.Subject, env)
			continue
		}
		b.mu.RLock()
		t := b.topics[m.Subject]
		b.mu.RUnlock()
		if t == nil || t.sub != m.Sub {
			continue // unsubscribed while the message was queued
		}
		if stored {
			seq, _ := strconv.ParseUint(env.ID, 10, 64)
			if t.lastSeq != 0 && prev > t.lastSeq {
				slow = b.repair(t, prev, slow)
			}
			if _, dup := t.repaired[seq]; dup {
				delete(t.repaired, seq)
				continue // delivered by a repair already
			}
			t.lastSeq = seq // a lower one: the store was reset
		}
		f := wire.MessageFrame(t.kind, t.name, env)
		f.Stored, f.Prev = stored, prev
		slow = t.fanout(f, slow)
	}
}

// fanout queues f on every member of t, then closes the members whose
// queue was full. slow is scratch space, returned for reuse.
func (t *topic) fanout(f *wire.Frame, slow []*Conn) []*Conn {
	t.mu.RLock()
	for c := range t.members {
		if !c.enqueueFrom(t, f) {
			slow = append(slow, c)
		}
	}
	t.mu.RUnlock()
	for i, c := range slow {
		c.closeSlow() // outside the topic lock: closing leaves topics
		slow[i] = nil
	}
	return slow[:0]
}

func (b *Broker) deliverToConn(subj string, env wire.Envelope) {
	prefix := len(b.subjects.ConnWildcard(b.instance)) - 1 // without the "*"
	if len(subj) <= prefix {
		return
	}
	id := subject.ConnID(b.instance, subj[prefix:])
	b.mu.RLock()
	c := b.conns[id]
	b.mu.RUnlock()
	if c != nil && !c.enqueue(wire.MessageFrame(wire.KindConn, "", env)) {
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
	return nil
}

func (b *Broker) isClosing() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.closing
}

func (b *Broker) unregister(c *Conn) {
	b.mu.Lock()
	delete(b.conns, c.id)
	b.mu.Unlock()
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
	close(b.stopDispatch)
	<-b.dispatchDone
	b.pres.shutdown()
	b.teardownNATS()
	return err
}

func (b *Broker) teardownNATS() {
	if b.nc != nil {
		b.pres.unsubscribe()
		if b.connSub != nil {
			_ = b.connSub.Unsubscribe()
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
