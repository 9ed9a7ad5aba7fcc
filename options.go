package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/pubsub/embedded"
	"github.com/roomcast/pubsub/internal/history"
	"github.com/roomcast/pubsub/internal/subject"
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
	natsURLSet      bool // an empty URL is an error, not the embedded default
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
	sseMaxAge       time.Duration
	calls           map[string]CallHandler
	inbox           *History
	callsInFlight   int
	callTimeout     time.Duration
	maxRooms        int
	history         []history.Rule
	storeDir        string
	presenceTimeout time.Duration
	historyReplicas int
	historyBytes    int64
	jsDomain        string
	holdRequests    bool
	noStats         bool
	compress        bool // WithCompression
	compressMin     int
}

// Defaults, documented on the options that change them.
const (
	DefaultMaxMessageSize = 64 << 10
	DefaultQueueMessages  = 1024
	DefaultQueueBytes     = 4 << 20
	DefaultWriteTimeout   = 10 * time.Second
	DefaultKeepAlive      = 15 * time.Second
	DefaultPongTimeout    = 10 * time.Second
	DefaultSSEMaxAge      = 10 * time.Minute
	DefaultMaxRooms       = 256
	DefaultNamespace      = "roomcast"
)

// WithLogger sets the logger for the broker and its embedded NATS server.
// Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithNATSConn runs the broker on an existing NATS connection instead of an
// embedded server: the scale-out path, where every instance of the app
// connects to the same NATS cluster. The broker does not close nc.
//
// The connection's handlers stay the host's: the broker then does not log
// its disconnects, reconnects and slow-consumer drops itself.
func WithNATSConn(nc *nats.Conn) Option { return func(c *config) { c.nc = nc } }

// WithNATSURL makes the broker connect to the NATS server(s) at url (a
// comma-separated list is allowed) instead of starting an embedded server.
// opts are passed to nats.Connect after the broker's own (which reconnect
// forever). The broker closes this connection on Close.
func WithNATSURL(url string, opts ...nats.Option) Option {
	return func(c *config) { c.natsURL, c.natsOpts, c.natsURLSet = url, opts, true }
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

// WithCompression lets WebSocket clients that offer permessage-deflate
// (RFC 7692; Chromium and Firefox do) receive compressed messages. Each
// WebSocket message of minSize bytes or more is deflated on its own, with
// no context takeover: neither side keeps compression state between
// messages. Under load the broker joins queued frames into one message
// (PROTOCOL.md §3); minSize applies to the joined message, which
// compresses far better than a frame alone. WithCompression(0) compresses
// every message; 512 is a reasonable start.
//
// What it costs, measured (BENCHMARKS.md, "What compression costs"): the
// server deflates a message once for each connection it goes to (a room of
// 10,000 compresses the same bytes 10,000 times): 18 µs for a 612-byte
// chat message, 10 µs for a 64-byte one on the benchmark machine, where
// the socket write of a delivery costs about 10 µs. CPU per delivery rises
// 2 to 6 times, to save 32% of the bytes of a lone 612-byte message, 12%
// of a 64-byte one, and nearly 80% of bursts (joined frames). Memory: a
// connection whose client has sent one compressed frame keeps a 4 KiB
// inflate buffer until it closes, and Chromium compresses every frame it
// sends: about 4.3 KiB more per such connection (7.5 KiB of live heap
// becomes 11.8). Sending adds nothing per connection: each message borrows
// a 1.2 MB compressor from a pool, so there are as many as writers
// compressing at once.
//
// Use it where bytes cost more than CPU: clients on slow or metered links,
// few subscribers per message, large or bursty messages. Clients that do
// not offer the extension (the Go client of package client, and most
// libraries by default) get uncompressed messages, as without the option.
// SSE streams are unaffected: compressing them is the host's gzip
// middleware's business (README, "Works with"). Stats counts bytes before
// compression. Default: off.
func WithCompression(minSize int) Option {
	return func(c *config) { c.compress, c.compressMin = true, minSize }
}

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

// WithSSEMaxAge bounds how long one SSE stream lives: after d, less up to
// a tenth at random so streams opened together do not end together, the
// stream ends with a close event of code 1012 and the client reconnects at
// once (an EventSource by itself, with Last-Event-ID), so rooms with history
// lose nothing; a room without history may miss what is published in the
// moment of the reconnect, as at any network change.
//
// Why: EventSource never sends anything, so a client that stopped reading
// cannot be told from one that reads until the server has something to
// write (then the write deadline or the send queue ends it). In a quiet
// room nothing would ever end it; this does. A WebSocket needs no such
// bound: its pings go unanswered when its client stops reading.
// Default 10 minutes (Mercure's default too); 0 removes the bound.
func WithSSEMaxAge(d time.Duration) Option { return func(c *config) { c.sseMaxAge = d } }

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

// WithoutStats stops the broker counting what it does (Stats then has its
// gauges only, and pubsubprom exports those). Counting costs a few atomic
// additions per message and per socket write, never per delivery: measured
// within noise of nothing (BENCHMARKS.md); this exists for the measurement.
func WithoutStats() Option { return func(c *config) { c.noStats = true } }

// WithMaxRooms bounds the rooms one connection may be in. Default 256.
func WithMaxRooms(n int) Option { return func(c *config) { c.maxRooms = n } }

// WithHistory keeps history for the rooms whose names match pattern
// (path.Match syntax: "chat:*"; "*" is every room). Repeat it for several
// patterns; the first that matches a room decides. History lives in
// JetStream on the broker's NATS (enabled on the embedded server; an
// external server must have JetStream), in one stream for all rooms. Rooms
// without history keep the plain path, with no JetStream cost.
func WithHistory(pattern string, h History) Option {
	return func(c *config) {
		c.history = append(c.history, history.Rule{Pattern: pattern, Messages: h.Messages, MaxAge: h.MaxAge})
	}
}

// WithStoreDir keeps history in files under dir, so it survives restarts
// (embedded server). Without it, history is in memory. With an external
// NATS server history always uses file storage.
func WithStoreDir(dir string) Option { return func(c *config) { c.storeDir = dir } }

// WithHistoryMaxBytes bounds the history store: when it is full, the
// oldest messages of all rooms go first. Default: in memory 256 MiB; on
// file, 1 GiB or half the space free on the embedded server's store disk
// at New, whichever is less (New fails, saying so, when that is under
// 8 MiB). The NATS server must be able to reserve it.
func WithHistoryMaxBytes(n int64) Option { return func(c *config) { c.historyBytes = n } }

// WithHistoryReplicas keeps history on n JetStream nodes (1, 3 or 5), so
// it survives the loss of a node: the stream is replicated with Raft, and a
// publish returns once a majority has stored it. The NATS cluster (embedded
// nodes with JetStream, or the external cluster) must have n JetStream
// nodes. Default 1.
func WithHistoryReplicas(n int) Option { return func(c *config) { c.historyReplicas = n } }

// WithJetStreamDomain names the JetStream domain that keeps history. Needed
// when instances are leaf nodes of a NATS system that runs JetStream (the
// leaf topology): give the hub's JetStream a domain (jetstream { domain:
// hub }) and pass it here, so that every instance's history requests cross
// the leaf connection to the one shared store.
func WithJetStreamDomain(domain string) Option { return func(c *config) { c.jsDomain = domain } }

// WithPresenceTimeout bounds how long a dead instance's connections stay in
// presence: every instance sends a heartbeat every d/3, and one not heard
// from for d is dropped from every room. An instance that shuts down
// normally is dropped at once. Default 15s.
func WithPresenceTimeout(d time.Duration) Option {
	return func(c *config) { c.presenceTimeout = d }
}

// defaults returns the configuration without options.
func defaults() config {
	return config{
		namespace:       DefaultNamespace,
		maxMessage:      DefaultMaxMessageSize,
		queueMessages:   DefaultQueueMessages,
		queueBytes:      DefaultQueueBytes,
		writeTimeout:    DefaultWriteTimeout,
		keepAlive:       DefaultKeepAlive,
		pongTimeout:     DefaultPongTimeout,
		sseMaxAge:       DefaultSSEMaxAge,
		callsInFlight:   DefaultCallsInFlight,
		callTimeout:     DefaultCallTimeout,
		maxRooms:        DefaultMaxRooms,
		presenceTimeout: DefaultPresenceTimeout,
	}
}

// validate checks the options before anything starts.
func (cfg *config) validate() error {
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if err := subject.ValidNamespace(cfg.namespace); err != nil {
		return fmt.Errorf("pubsub: %w", err)
	}
	if cfg.maxMessage <= 0 || cfg.queueMessages <= 0 || cfg.queueBytes <= 0 || cfg.writeTimeout <= 0 ||
		cfg.keepAlive <= 0 || cfg.pongTimeout <= 0 || cfg.maxRooms <= 0 || cfg.callsInFlight <= 0 || cfg.callTimeout <= 0 {
		return errors.New("pubsub: sizes, limits and durations in options must be positive")
	}
	if cfg.compress && cfg.compressMin < 0 {
		return errors.New("pubsub: WithCompression needs a size of 0 or more")
	}
	if cfg.inbox != nil && (cfg.inbox.Messages <= 0 || cfg.inbox.MaxAge < 0) {
		return errors.New("pubsub: WithInbox needs a number of messages per user (History.Messages > 0): an inbox must be bounded")
	}
	for method := range cfg.calls {
		if method == "" || len(method) > 64 {
			return fmt.Errorf("pubsub: WithCall: method %q must be 1 to 64 bytes", truncate(method))
		}
	}
	if cfg.natsURLSet && strings.TrimSpace(cfg.natsURL) == "" {
		return errors.New("pubsub: WithNATSURL was given an empty URL (an unset environment variable?); leave the option out to run the embedded server")
	}
	if cfg.jsDomain != "" && subject.ValidNamespace(cfg.jsDomain) != nil {
		return fmt.Errorf("pubsub: JetStream domain %q must be 1-32 characters of [A-Za-z0-9_-]", truncate(cfg.jsDomain))
	}
	if cfg.presenceTimeout < 300*time.Millisecond {
		return errors.New("pubsub: the presence timeout must be at least 300ms")
	}
	if cfg.historyBytes < 0 || cfg.historyBytes > 0 && cfg.historyBytes < 1<<20 {
		return errors.New("pubsub: the history size must be at least 1 MiB")
	}
	if cfg.historyReplicas < 0 || cfg.historyReplicas > 5 {
		return errors.New("pubsub: history replicas must be 1 to 5")
	}
	if err := history.ValidateRules(cfg.history); err != nil {
		return fmt.Errorf("pubsub: %w", err)
	}
	return nil
}
