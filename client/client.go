// Package client connects Go programs to a roomcast/pubsub endpoint over
// WebSocket or Server-Sent Events, with the browser client's behaviour: it
// reconnects with backoff and jitter, resubscribes its rooms and resumes
// each from its last message id, moves between instances, refreshes an
// expiring session, and stops, with a clear error, when the server says
// not to come back. It speaks PROTOCOL.md version 1.
//
//	c, err := client.Dial(ctx, "https://app.example/live", &client.Options{
//		Header: http.Header{"Cookie": {"session=…"}},
//	})
//	if err != nil { … }
//	defer c.Close()
//	sub, err := c.Subscribe(ctx, "lobby")
//	for msg, err := range sub.Messages(ctx) {
//		if err != nil { … } // ErrTruncated and *DroppedError are not final
//		fmt.Println(msg.From, string(msg.Data))
//	}
//
// Identity is whatever the host's middleware makes of the request: pass the
// session cookie or Authorization header in Options.Header, or an
// http.Client with a cookie jar in Options.HTTPClient.
//
// While the client reconnects, requests (Subscribe, Publish, History,
// Call…) wait for the next connection: bound them with ctx. A read, a
// publish with its idempotency key, an acknowledgement are sent again after
// a lost connection (at most three times); a call or a send is not
// (ErrConnectionLost).
package client

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Transport chooses how to connect.
type Transport int

const (
	// Auto tries WebSocket first at every connection, and SSE when a
	// WebSocket has never opened but the server answers (a proxy that
	// blocks upgrades).
	Auto Transport = iota
	// WebSocket only.
	WebSocket
	// SSE only: an EventSource-style stream; the client's frames are POSTed.
	SSE
)

func (t Transport) String() string {
	return [...]string{"auto", "websocket", "sse"}[min(uint(t), 2)]
}

// Options configure a Client. The zero value is ready to use.
type Options struct {
	// Header goes with every request: the session cookie, Authorization.
	Header http.Header
	// HTTPClient makes every request; http.DefaultClient if nil. Its Jar,
	// if any, gives and keeps the session's cookies (a refresh may renew
	// them). Its Timeout is ignored: an SSE stream is one long response,
	// and the client bounds each request itself.
	HTTPClient *http.Client
	Transport  Transport
	// URLs are other instances of the same app: after a failure the client
	// moves to another one, at random.
	URLs []string
	// Reconnect backoff: full jitter from MinDelay (500 ms), doubling up to
	// MaxDelay (20 s).
	MinDelay, MaxDelay time.Duration
	// Buffer is how many items each iterator keeps before dropping (1024).
	Buffer int
	// Logger receives the client's warnings (server errors no request
	// waits for, reconnects); slog.Default() if nil.
	Logger *slog.Logger
}

// Client is a connection that outlives its transports. Its methods are safe
// for concurrent use.
type Client struct {
	o      Options
	log    *slog.Logger
	urls   []*url.URL
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	base     int // index in urls
	tr       transport
	conn     string
	user     string
	open     chan struct{} // closed while a connection is open; replaced at each drop
	err      error         // why the client stopped, once it has
	rooms    map[string]*room
	pending  map[string]*pending
	ref      int64
	lastID   string // SSE: the stream's last "id:"
	wsWorked bool
	mode     Transport // WebSocket or SSE
	rebuild  bool      // SSE: the stream's rooms changed without a POST
	direct   *queue[Message]
	inbox    *queue[InboxMessage]
	closing  bool
	ackNext  string         // the inbox id to acknowledge next
	acking   bool           // an acknowledgement is on its way
	jobs     sync.WaitGroup // background sends; none is added once err is set
}

// room is a subscribed room and everyone reading it.
type room struct {
	subs     []*Subscription
	lastID   string
	presence bool
	behind   bool         // resuming from a caller's last id, not yet past the stream's position
	catchUp  string       // that position
	ok       bool         // the server confirmed it ("subscribed")
	waiters  []chan error // Subscribe calls waiting for "subscribed"
}

// Dial connects to url, the mount path of the server's handler, and returns
// once the server welcomed the connection; ctx bounds that first
// connection only. A first connection that fails
// is an error (a *CloseError when the host refused it); after that the
// Client reconnects by itself until Close, or until the server ends it
// for good (Err says why).
func Dial(ctx context.Context, rawURL string, o *Options) (*Client, error) {
	c := &Client{rooms: map[string]*room{}, pending: map[string]*pending{}, open: make(chan struct{}), done: make(chan struct{})}
	if o != nil {
		c.o = *o
	}
	if c.o.HTTPClient == nil {
		c.o.HTTPClient = http.DefaultClient
	} else if c.o.HTTPClient.Timeout > 0 { // it would end every SSE stream; each request has its own deadline
		hc := *c.o.HTTPClient
		hc.Timeout = 0
		c.o.HTTPClient = &hc
	}
	c.o.MinDelay = cmpOrDur(c.o.MinDelay, 500*time.Millisecond)
	c.o.MaxDelay = cmpOrDur(c.o.MaxDelay, 20*time.Second)
	if c.o.Buffer <= 0 {
		c.o.Buffer = 1024
	}
	c.log = c.o.Logger
	if c.log == nil {
		c.log = slog.Default()
	}
	for _, s := range append([]string{rawURL}, c.o.URLs...) {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("roomcast: not an http(s) URL: " + strconv.Quote(s))
		}
		c.urls = append(c.urls, u)
	}
	c.mode = WebSocket
	if c.o.Transport == SSE {
		c.mode = SSE
	}
	c.direct = newQueue(c.o.Buffer, messageSize)
	c.inbox = newQueue(c.o.Buffer, inboxSize)
	c.ctx, c.cancel = context.WithCancel(context.Background())

	first := make(chan error, 1)
	go c.run(first)
	select {
	case err := <-first:
		if err != nil {
			<-c.done
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

func cmpOrDur(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Conn is the id of the current connection ("" while reconnecting).
func (c *Client) Conn() string { c.mu.Lock(); defer c.mu.Unlock(); return c.conn }

// User is the user id the server gave the connection ("" if anonymous).
func (c *Client) User() string { c.mu.Lock(); defer c.mu.Unlock(); return c.user }

// Transport is the transport in use (WebSocket or SSE) or, while
// reconnecting, the one tried next.
func (c *Client) Transport() Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}

// Done is closed when the client stopped: closed, or ended by the server.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the client stopped: ErrClosed, or a *CloseError. It is nil
// while the client runs.
func (c *Client) Err() error {
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	default:
		return nil
	}
}

// Close ends the connection and every iterator (with ErrClosed). It waits
// for the client's goroutines.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	tr := c.tr
	c.mu.Unlock()
	if tr != nil {
		tr.close(true) // a close frame, before the context ends the reader
	}
	c.cancel()
	<-c.done
	return nil
}

// run owns the connection: it connects, reads until the connection drops,
// and reconnects, until Close or a final refusal.
func (c *Client) run(first chan<- error) {
	defer close(c.done)
	defer c.jobs.Wait()
	attempt := 0
	for {
		end, opened := c.connectAndServe(first)
		first = nil
		if c.ctx.Err() != nil || c.isClosing() {
			c.stop(ErrClosed)
			return
		}
		if final := c.finalError(end); final != nil {
			c.stop(final)
			return
		}
		if opened { // the backoff starts over
			attempt = 0
		}
		delay := time.Duration(0)
		if end != roomsChanged {
			c.mu.Lock()
			if c.o.Transport == Auto {
				c.mode = WebSocket // WebSocket first, every time (it may work elsewhere)
			}
			c.mu.Unlock()
			if end.code == 1009 {
				c.log.Error("roomcast: a frame exceeded the server's size limit; the server closed the connection", "reason", end.reason)
			}
			delay = c.backoff(end, attempt)
			attempt++
			c.log.Warn("roomcast: connection lost, reconnecting", "code", end.code, "reason", end.reason, "in", delay.Round(time.Millisecond))
		}
		select {
		case <-time.After(delay):
		case <-c.ctx.Done():
			c.stop(ErrClosed)
			return
		}
		c.mu.Lock()
		if len(c.urls) > 1 { // another instance, at random: a dead one's clients spread out
			c.base = (c.base + 1 + rand.IntN(len(c.urls)-1)) % len(c.urls)
		}
		c.mu.Unlock()
	}
}

// backoff is full jitter over a doubling cap; sooner after a restart (1012),
// much later when the server asked (4004).
func (c *Client) backoff(end *closed, attempt int) time.Duration {
	limit := min(c.o.MaxDelay, c.o.MinDelay<<min(attempt, 16))
	switch end.code {
	case 4004:
		return c.o.MaxDelay/2 + rand.N(c.o.MaxDelay/2+1)
	case 1012:
		limit = min(limit, time.Second)
	}
	return rand.N(limit + 1)
}

// finalError is what ends the client for good, or nil to reconnect.
func (c *Client) finalError(end *closed) error {
	switch end.code {
	case 4003:
		return &CloseError{Code: 4003, Reason: end.reason}
	case 1008:
		return &CloseError{Code: 1008, Reason: end.reason, Status: end.status}
	case 4005: // over only if the host says so: another client may have renewed the session
		if end.status == 401 || end.status == 403 {
			return &CloseError{Code: 4005, Reason: end.reason, Status: end.status}
		}
		if r := probe(c.ctx, c.url(), &c.o); r.status == 401 || r.status == 403 {
			return &CloseError{Code: 4005, Reason: end.reason, Status: r.status}
		}
	}
	return nil
}

func (c *Client) isClosing() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closing }

func (c *Client) url() *url.URL { c.mu.Lock(); defer c.mu.Unlock(); return c.urls[c.base] }

// stop ends the client: every waiter and iterator learns err.
func (c *Client) stop(err error) {
	c.mu.Lock()
	c.err = err
	c.cancel() // background jobs end
	rooms := c.rooms
	c.rooms = map[string]*room{}
	c.failPending(err)
	c.mu.Unlock()
	for _, r := range rooms {
		for _, w := range r.waiters {
			w <- err
		}
		for _, s := range r.subs {
			s.end(err)
		}
	}
	c.direct.end(err)
	c.inbox.end(err)
	if ce, ok := err.(*CloseError); ok {
		c.log.Error("roomcast: the server ended the connection for good; not reconnecting", "err", ce)
	}
}
