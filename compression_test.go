package pubsub_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// What WithCompression negotiates, with real clients: coder/websocket's
// (a library's), and rawWS below, which shows what a library hides: each
// message's RSV1 bit (compressed or not) and its bytes on the wire.

// noContextTakeover is the only answer a broker gives to an offer.
const noContextTakeover = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"

// chromiumOffer is the offer headless Chromium makes.
const chromiumOffer = "permessage-deflate; client_max_window_bits"

// A client that offers permessage-deflate with context takeover, as
// browsers do, is answered without it, and everything arrives intact both
// ways: large and small messages, and client frames it compressed.
func TestCompressionNegotiatedWithLibraryClient(t *testing.T) {
	b := newBroker(t, WithCompression(256), WithClientPublish(func(context.Context, string, string) error { return nil }))
	srv := serve(t, b, nil)
	ws, resp := dialLib(t, srv, &websocket.DialOptions{
		CompressionMode:      websocket.CompressionContextTakeover,
		CompressionThreshold: 1, // compress every client frame, as Chromium does
	})
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != noContextTakeover {
		t.Fatalf("Sec-WebSocket-Extensions = %q, want %q", got, noContextTakeover)
	}
	ws.Welcome = ws.next(t)
	if f := ws.next(t); f.Type != "subscribed" {
		t.Fatalf("frame = %+v, want subscribed", f)
	}
	sizes := []int{10, 200, 250, 300, 600, 5000, 60000}
	for _, n := range sizes {
		if err := b.Publish(ctx, "lobby", msg(text(n))); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range sizes {
		if f := ws.next(t); f.Type != "message" || f.Text() != text(n) {
			t.Fatalf("message of %d bytes = %.200s", n, f.Text())
		}
	}
	for _, n := range []int{5, 2000} { // the server reads compressed client frames
		ws.send(t, map[string]any{"type": "publish", "room": "lobby", "data": map[string]string{"text": text(n)}, "ref": n})
		got := map[string]bool{}
		for range 2 { // the ack and the message, in either order
			f := ws.next(t)
			got[f.Type] = f.Type == "published" || f.Type == "message" && f.Text() == text(n)
		}
		if !got["published"] || !got["message"] {
			t.Fatalf("publish of %d bytes: %v", n, got)
		}
	}
}

// The threshold is per WebSocket message: a message of minSize bytes or
// more is compressed, a smaller one is not, and a message that joins
// queued frames (PROTOCOL.md §3) counts as one.
func TestCompressionThresholdAndJoinedFrames(t *testing.T) {
	const minSize = 300
	b := newBroker(t, WithCompression(minSize))
	srv := serve(t, b, nil)
	c := dialRaw(t, srv, chromiumOffer)
	if c.ext != noContextTakeover {
		t.Fatalf("Sec-WebSocket-Extensions = %q, want %q", c.ext, noContextTakeover)
	}
	// One at a time, across the threshold: each is a message of its own.
	seen := map[bool]int{}
	for n := minSize - 120; n < minSize-40; n++ {
		if err := b.SendToConn(ctx, c.conn, msg(text(n))); err != nil {
			t.Fatal(err)
		}
		p, compressed := c.mustNext(t)
		if f := decode(t, p); len(f) != 1 || f[0].Text() != text(n) {
			t.Fatalf("message = %.200s", p)
		}
		if compressed != (len(p) >= minSize) {
			t.Fatalf("a message of %d bytes: compressed %v (minSize %d)", len(p), compressed, minSize)
		}
		seen[compressed]++
	}
	if seen[true] == 0 || seen[false] == 0 {
		t.Fatalf("compressed/not: %v; the sizes must straddle the threshold", seen)
	}
	// Bursts: frames queued together are joined, then compressed as one.
	sizes := []int{20, 600, 40, 5000, 64, 300}
	for burst := 0; ; burst++ {
		var want []string
		for i := range 60 {
			want = append(want, fmt.Sprintf("%d.%d %s", burst, i, text(sizes[i%len(sizes)])))
		}
		for _, w := range want {
			if err := b.SendToConn(ctx, c.conn, msg(w)); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		joined := false
		for len(got) < len(want) {
			p, compressed := c.mustNext(t)
			fs := decode(t, p)
			if compressed != (len(p) >= minSize) {
				t.Fatalf("a message of %d bytes, %d frames: compressed %v", len(p), len(fs), compressed)
			}
			joined = joined || len(fs) > 1 && compressed
			got = append(got, texts(fs)...)
		}
		for i := range got {
			got[i] = strings.TrimPrefix(got[i], "direct::")
		}
		if !slices.Equal(got, want) {
			t.Fatalf("burst %d arrived as %.300q", burst, got)
		}
		if joined {
			return
		}
		if burst == 20 {
			t.Fatal("20 bursts of 60 messages and no frames joined in one compressed message")
		}
	}
}

// A client that does not offer the extension gets what it always got.
func TestCompressionNotOfferedNotUsed(t *testing.T) {
	b := newBroker(t, WithCompression(0))
	srv := serve(t, b, nil)
	lib := dialWS(t, srv, dialOpts{rooms: []string{"lobby"}}) // coder/websocket offers nothing by default
	raw := dialRaw(t, srv, "")
	if raw.ext != "" {
		t.Fatalf("Sec-WebSocket-Extensions = %q for a client that offered nothing", raw.ext)
	}
	expectUncompressed(t, b, lib, raw)
}

// Without the option an offer is declined: no extension, no compression.
func TestCompressionOffByDefault(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	lib, resp := dialLib(t, srv, &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("Sec-WebSocket-Extensions = %q without WithCompression", ext)
	}
	lib.Welcome = lib.next(t)
	_ = lib.next(t) // subscribed
	raw := dialRaw(t, srv, chromiumOffer)
	if raw.ext != "" {
		t.Fatalf("Sec-WebSocket-Extensions = %q without WithCompression", raw.ext)
	}
	expectUncompressed(t, b, lib, raw)
}

func TestCompressionRefusesNegativeSize(t *testing.T) {
	if b, err := New(WithCompression(-1)); err == nil {
		b.Close()
		t.Fatal("New(WithCompression(-1)) succeeded")
	}
}

// dialLib connects a coder/websocket client with opts to lobby.
func dialLib(t *testing.T, srv *httptest.Server, opts *websocket.DialOptions) (*wsClient, *http.Response) {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, waitFor)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, liveURL(srv, "ws", []string{"lobby"}), opts)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 24)
	ws := &wsClient{&testkit.WS{Conn: c}}
	t.Cleanup(ws.Cut)
	return ws, resp
}

// expectUncompressed sends a large message to lib (in lobby) and to raw,
// and checks both get it whole and raw gets it uncompressed.
func expectUncompressed(t *testing.T, b *Broker, lib *wsClient, raw *rawWS) {
	t.Helper()
	big := text(20000)
	if err := b.Publish(ctx, "lobby", msg(big)); err != nil {
		t.Fatal(err)
	}
	if f := lib.next(t); f.Text() != big {
		t.Fatalf("library client got %.200s", f.Text())
	}
	if err := b.SendToConn(ctx, raw.conn, msg(big)); err != nil {
		t.Fatal(err)
	}
	p, compressed := raw.mustNext(t)
	if compressed || len(decode(t, p)) != 1 || decode(t, p)[0].Text() != big {
		t.Fatalf("raw client: compressed %v, %.200s", compressed, p)
	}
}

// text is n bytes of chat-like text: repetitive enough to compress.
func text(n int) string {
	const words = "the quick brown fox jumps over the lazy dog while the room keeps talking about lunch "
	return strings.Repeat(words, n/len(words)+1)[:n]
}

func decode(t *testing.T, p []byte) []frame {
	t.Helper()
	var fs []frame
	for line := range bytes.SplitSeq(p, []byte("\n")) {
		var f frame
		if err := json.Unmarshal(line, &f); err != nil {
			t.Fatalf("not a JSON frame: %.200q", line)
		}
		fs = append(fs, f)
	}
	return fs
}

// rawWS is a WebSocket client of the test's own on a TCP socket. It sees
// each message's RSV1 bit, counts the bytes of the frames the server sent
// (Wire: what the server's socket wrote after the handshake), and costs
// little besides its socket and buffers.
type rawWS struct {
	nc   net.Conn
	br   *bufio.Reader
	ext  string // the extension the server answered
	conn string // the connection id, from the welcome
	Wire int64

	subscribed bool // awaitSubscribed saw it

	in  bytes.Reader
	fr  io.ReadCloser // the inflater, reused
	msg []byte
	out bytes.Buffer
}

// dialRaw connects to srv's /live with offer (none if "") and reads the
// welcome.
func dialRaw(t testing.TB, srv *httptest.Server, offer string) *rawWS {
	t.Helper()
	c, err := dialRawErr(srv.Listener.Addr().String(), "", offer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.nc.Close() })
	return c
}

func dialRawErr(addr, query, offer string) (*rawWS, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	req := "GET /live?" + query + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if offer != "" {
		req += "Sec-WebSocket-Extensions: " + offer + "\r\n"
	}
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	defer nc.SetDeadline(time.Time{})
	c := &rawWS{nc: nc, br: bufio.NewReaderSize(nc, 1024)}
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		nc.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err == nil && resp.StatusCode != http.StatusSwitchingProtocols {
		err = fmt.Errorf("handshake: %s", resp.Status)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.ext = resp.Header.Get("Sec-WebSocket-Extensions")
	p, _, err := c.next()
	var welcome frame
	if err == nil {
		err = json.Unmarshal(bytes.SplitN(p, []byte("\n"), 2)[0], &welcome)
	}
	if err != nil || welcome.Type != "welcome" {
		nc.Close()
		return nil, fmt.Errorf("welcome: %.100q %v", p, err)
	}
	c.conn = welcome.Conn
	c.subscribed = bytes.Contains(p, []byte(`"type":"subscribed"`)) // ?room= frames may come with it
	return c, nil
}

func (c *rawWS) mustNext(t *testing.T) ([]byte, bool) {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(waitFor))
	p, compressed, err := c.next()
	if err != nil {
		t.Fatal(err)
	}
	return p, compressed
}

// next reads a data message: its payload, inflated, and whether it came
// compressed. It answers pings; a close frame is io.EOF.
func (c *rawWS) next() (p []byte, compressed bool, err error) {
	c.msg = c.msg[:0]
	for {
		var h [10]byte
		if _, err := io.ReadFull(c.br, h[:2]); err != nil {
			return nil, false, err
		}
		fin, rsv1, op := h[0]&0x80 != 0, h[0]&0x40 != 0, h[0]&0x0f
		n, ext := int(h[1]&0x7f), 0
		if n == 126 {
			ext = 2
		} else if n == 127 {
			ext = 8
		}
		if ext > 0 {
			if _, err := io.ReadFull(c.br, h[2:2+ext]); err != nil {
				return nil, false, err
			}
			n = 0
			for _, b := range h[2 : 2+ext] {
				n = n<<8 | int(b)
			}
		}
		start := len(c.msg)
		c.msg = slices.Grow(c.msg, n)[:start+n]
		if _, err := io.ReadFull(c.br, c.msg[start:]); err != nil {
			return nil, false, err
		}
		c.Wire += int64(2 + ext + n)
		switch op {
		case 0x8:
			return nil, false, io.EOF
		case 0x9, 0xa: // a ping is answered with a masked pong (mask 0)
			if op == 0x9 {
				if _, err := c.nc.Write(append([]byte{0x8a, 0x80 | byte(n), 0, 0, 0, 0}, c.msg[start:]...)); err != nil {
					return nil, false, err
				}
			}
			c.msg = c.msg[:start]
			continue
		case 0x1, 0x2:
			compressed = rsv1
		}
		if fin {
			break
		}
	}
	if !compressed {
		return c.msg, false, nil
	}
	// RFC 7692 §7.2.2: append the tail the sender removed, then inflate.
	c.in.Reset(append(c.msg, 0, 0, 0xff, 0xff))
	if c.fr == nil {
		c.fr = flate.NewReader(&c.in)
	} else {
		_ = c.fr.(flate.Resetter).Reset(&c.in, nil)
	}
	c.out.Reset()
	if _, err := c.out.ReadFrom(c.fr); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, true, err
	}
	return c.out.Bytes(), true, nil
}

var deflaters = sync.Pool{New: func() any { w, _ := flate.NewWriter(nil, flate.BestSpeed); return w }}

// send writes one client frame, masked (mask 0), deflated if deflate.
func (c *rawWS) send(p []byte, deflate bool) error {
	h := byte(0x81)
	if deflate {
		var buf bytes.Buffer
		fw := deflaters.Get().(*flate.Writer) // 1.2 MB each: reused
		fw.Reset(&buf)
		_, _ = fw.Write(p)
		_ = fw.Flush()
		deflaters.Put(fw)
		p, h = bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff}), 0xc1
	}
	if len(p) > 125 {
		return errors.New("rawWS.send: frames up to 125 bytes")
	}
	_, err := c.nc.Write(append([]byte{h, 0x80 | byte(len(p)), 0, 0, 0, 0}, p...))
	return err
}
