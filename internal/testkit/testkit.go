// Package testkit holds the test clients every test package of the project
// shares: a real WebSocket client and a real Server-Sent Events client, over
// real sockets, that decode server frames as PROTOCOL.md describes them.
// It is imported by tests only; it does not import the root package, so the
// root package's own tests can use it.
package testkit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Wait bounds every wait for a frame in tests.
const Wait = 5 * time.Second

// Frame is any server frame, decoded loosely.
type Frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Room    string          `json:"room"`
	To      string          `json:"to"`
	From    string          `json:"from"`
	Conn    string          `json:"conn"`
	User    string          `json:"user"`
	Code    json.RawMessage `json:"code"`
	Message string          `json:"message"`
	Reason  string          `json:"reason"`
	By      string          `json:"by"`      // "server": a subscription server code made or ended
	Expires int64           `json:"expires"` // refresh
	Ref     json.RawMessage `json:"ref"`
	Data    json.RawMessage `json:"data"`
	Count   int             `json:"count"` // presence
	Conns   int             `json:"conns"`
	Next    string          `json:"next"`
	Members []Member        `json:"members"`
	SSEID   string          `json:"-"` // the SSE "id:" field
}

// Member is one entry of a presence frame's members.
type Member struct {
	User  string `json:"user"`
	Conns int    `json:"conns"`
}

// ErrorCode is the code of an error frame, or of a close frame/event, as text.
func (f Frame) ErrorCode() string { return strings.Trim(string(f.Code), `"`) }

// Text returns the "text" field of a message's data.
func (f Frame) Text() string {
	var d struct{ Text string }
	_ = json.Unmarshal(f.Data, &d)
	return d.Text
}

// Msg is the data {"text": text}.
func Msg(text string) []byte {
	p, _ := json.Marshal(map[string]string{"text": text})
	return p
}

// Texts summarizes frames as "type:room:text", for comparisons.
func Texts(fs []Frame) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.Type+":"+f.Room+":"+f.Text())
	}
	return out
}

// Client is a connection of either transport.
type Client interface {
	// NextErr returns the next frame, waiting at most d.
	NextErr(d time.Duration) (Frame, error)
	// ConnID is the connection id of the welcome frame.
	ConnID() string
}

// Next returns c's next frame or fails the test after Wait.
func Next(t testing.TB, c Client) Frame {
	t.Helper()
	f, err := c.NextErr(Wait)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return f
}

// Collect reads frames until the message whose data is {"text": marker}
// and returns the frames before it. A marker sent last, on the same path,
// proves that nothing else is on its way: what is not in the result was not
// delivered.
func Collect(t testing.TB, c Client, marker string) []Frame {
	t.Helper()
	var got []Frame
	for {
		f := Next(t, c)
		if (f.Type == "direct" || f.Type == "message") && f.Text() == marker {
			return got
		}
		got = append(got, f)
	}
}

// WS is a real WebSocket client.
type WS struct {
	Conn    *websocket.Conn
	Welcome Frame
	pending []Frame
}

// DialWS connects to url and reads the welcome frame. opts may be nil.
func DialWS(ctx context.Context, url string, opts *websocket.DialOptions) (*WS, *http.Response, error) {
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(1 << 24)
	ws := &WS{Conn: c}
	if ws.Welcome, err = ws.NextErr(Wait); err != nil {
		_ = c.CloseNow()
		return nil, resp, fmt.Errorf("reading welcome: %w", err)
	}
	if ws.Welcome.Type != "welcome" {
		_ = c.CloseNow()
		return nil, resp, fmt.Errorf("first frame %+v, want welcome", ws.Welcome)
	}
	return ws, resp, nil
}

// ConnID implements Client.
func (c *WS) ConnID() string { return c.Welcome.Conn }

// NextErr implements Client. A read that times out closes the connection
// (coder/websocket's rule): tests that poll must read elsewhere.
func (c *WS) NextErr(d time.Duration) (Frame, error) {
	if len(c.pending) == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, p, err := c.Conn.Read(ctx)
		if err != nil {
			return Frame{}, err
		}
		for _, line := range strings.Split(string(p), "\n") {
			var f Frame
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				return Frame{}, fmt.Errorf("bad frame %q: %v", line, err)
			}
			c.pending = append(c.pending, f)
		}
	}
	f := c.pending[0]
	c.pending = c.pending[1:]
	return f, nil
}

// Send writes one client frame: a string as is, anything else as JSON.
func (c *WS) Send(v any) error {
	var p []byte
	switch v := v.(type) {
	case string:
		p = []byte(v)
	case []byte:
		p = v
	default:
		p, _ = json.Marshal(v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	return c.Conn.Write(ctx, websocket.MessageText, p)
}

// Cut drops the connection without a close handshake, as a network failure
// would.
func (c *WS) Cut() { _ = c.Conn.CloseNow() }

// SSE is a real Server-Sent Events client: a GET whose body is parsed as an
// event stream, in its own goroutine.
type SSE struct {
	Resp    *http.Response
	Welcome Frame

	cancel  context.CancelFunc
	events  chan Frame
	done    chan struct{}
	pending []Frame

	mu    sync.Mutex
	raw   strings.Builder // every line read
	retry string          // the last "retry:" value
}

// DialSSE sends a GET with Accept: text/event-stream through client (nil:
// http.DefaultClient) and, on a 200, starts reading events. It does not
// read the welcome; see ReadWelcome. A non-200 answer is returned with an
// error and a closed body.
func DialSSE(client *http.Client, url string, header http.Header) (*SSE, *http.Response, error) {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	slow := time.AfterFunc(Wait, cancel) // a stream whose head never comes fails the test
	resp, err := client.Do(req)
	if !slow.Stop() && err == nil {
		resp.Body.Close()
		err = fmt.Errorf("no complete response head in %v", Wait)
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		return nil, resp, fmt.Errorf("status %d", resp.StatusCode)
	}
	c := &SSE{Resp: resp, cancel: cancel, events: make(chan Frame, 100000), done: make(chan struct{})}
	go c.read()
	return c, resp, nil
}

// ReadWelcome reads the first event, which must be the welcome.
func (c *SSE) ReadWelcome() error {
	f, err := c.NextErr(Wait)
	if err != nil {
		return fmt.Errorf("reading welcome: %w", err)
	}
	if f.Type != "welcome" {
		return fmt.Errorf("first event %+v, want welcome", f)
	}
	c.Welcome = f
	return nil
}

func (c *SSE) read() {
	defer close(c.done)
	defer close(c.events)
	sc := bufio.NewScanner(c.Resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		c.raw.WriteString(line + "\n")
		if v, ok := strings.CutPrefix(line, "retry: "); ok {
			c.retry = v
		}
		c.mu.Unlock()
		switch {
		case line == "":
			if data != "" {
				var f Frame
				_ = json.Unmarshal([]byte(data), &f)
				f.SSEID = id
				c.events <- f
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
}

// Close ends the request and waits for the reader.
func (c *SSE) Close() {
	c.cancel()
	c.Resp.Body.Close()
	<-c.done
}

// ConnID implements Client.
func (c *SSE) ConnID() string { return c.Welcome.Conn }

// Unread puts f back, to be returned by the next NextErr.
func (c *SSE) Unread(f Frame) { c.pending = append([]Frame{f}, c.pending...) }

// NextErr implements Client; io.EOF when the stream ended.
func (c *SSE) NextErr(d time.Duration) (Frame, error) {
	if len(c.pending) > 0 {
		f := c.pending[0]
		c.pending = c.pending[1:]
		return f, nil
	}
	select {
	case f, ok := <-c.events:
		if !ok {
			return Frame{}, io.EOF
		}
		return f, nil
	case <-time.After(d):
		return Frame{}, errors.New("timeout")
	}
}

// Raw returns every line read so far.
func (c *SSE) Raw() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw.String()
}

// Retry returns the stream's "retry:" value, "" if none was sent.
func (c *SSE) Retry() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.retry
}
