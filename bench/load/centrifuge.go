package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Centrifuge's client protocol (v2, JSON), as far as a subscriber needs it.
// The server subscribes the connection to its channels (server-side
// subscriptions), so the client only connects:
//
//   - WebSocket: after the handshake, one text frame with the connect command;
//     the first frame back is its reply. SSE: the connect command in the
//     cf_connect query parameter (centrifuge-js's SSE transport); the first
//     event is the reply, which names the session and the node.
//   - Publications arrive as {"push":{"channel":"r0","pub":{"data":{"b":…}}}},
//     several per WebSocket frame joined by "\n" (one per SSE event); the
//     common parser finds {"b": in them.
//   - Every 25 s (first one after 12.5–25 s) the server sends a ping, `{}`,
//     possibly in a frame with pushes; the client must answer `{}` within
//     10 s or be disconnected (3012 no pong). Over WebSocket the answer is a
//     frame; over SSE, which is centrifuge's bidirectional emulation, it is a
//     POST to the emulation endpoint, {"session":S,"node":N,"data":"{}"}, as
//     centrifuge-js sends it. Answering when no ping was sent is a protocol
//     error (3501 bad request), so the client answers pings only.
type cfConn struct {
	addr          string // host:port of the server, for the emulation endpoint
	session, node string // SSE: from the connect reply
}

const cfConnectCommand = `{"id":1,"connect":{}}`

// cfPongClient posts SSE subscribers' pongs, over a few kept-alive connections.
var cfPongErr sync.Once

var cfPongClient = &http.Client{Timeout: 10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}}

// connectWS sends the connect command and reads frames until its reply.
// The caller's deadline on nc bounds it.
func (cf *cfConn) connectWS(nc net.Conn, br *bufio.Reader) error {
	if _, err := nc.Write(wsTextFrame([]byte(cfConnectCommand))); err != nil {
		return err
	}
	for {
		op, p, err := readFrameAlloc(br)
		if err != nil {
			return fmt.Errorf("centrifuge connect: %v", err)
		}
		if op == 0x8 {
			return fmt.Errorf("centrifuge connect: closed %q", p)
		}
		if op != 0x1 {
			continue
		}
		return cfCheckReply(p)
	}
}

func cfCheckReply(p []byte) error {
	line, _, _ := strings.Cut(string(p), "\n")
	if !strings.HasPrefix(line, `{"id":1,"connect":`) {
		return fmt.Errorf("centrifuge connect: reply %q", line)
	}
	return nil
}

// pongWS answers every ping line in a complete text frame; false if the
// write failed.
func (cf *cfConn) pongWS(nc net.Conn, p []byte) bool {
	for len(p) > 0 {
		line := p
		if i := indexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		if len(line) == 2 && line[0] == '{' && line[1] == '}' {
			_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := nc.Write(cfPongFrame); err != nil {
				return false
			}
		}
	}
	return true
}

var cfPongFrame = wsTextFrame([]byte("{}"))

// wsTextFrame is a masked (zero mask) text frame of a short payload.
func wsTextFrame(p []byte) []byte {
	if len(p) > 125 {
		panic("wsTextFrame: payload too long")
	}
	return append([]byte{0x81, 0x80 | byte(len(p)), 0, 0, 0, 0}, p...)
}

// readFrameAlloc reads one whole message (continuations joined); for the
// connect phase only.
func readFrameAlloc(br *bufio.Reader) (byte, []byte, error) {
	var msg []byte
	var first byte
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return 0, nil, err
		}
		fin, op := hdr[0]&0x80 != 0, hdr[0]&0x0f
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return 0, nil, err
			}
			n = int(hdr[0])<<8 | int(hdr[1])
		case 127:
			if _, err := io.ReadFull(br, hdr[:8]); err != nil {
				return 0, nil, err
			}
			n = 0
			for _, b := range hdr {
				n = n<<8 | int(b)
			}
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			return 0, nil, err
		}
		if op >= 0x8 { // control frame, between fragments or alone
			if op == 0x8 {
				return op, p, nil
			}
			continue
		}
		if op != 0 {
			first = op
		}
		msg = append(msg, p...)
		if fin {
			return first, msg, nil
		}
	}
}

// connectSSE reads events until the connect reply and keeps its session and
// node, with a 10 s cap.
func (cf *cfConn) connectSSE(body io.Closer, br *bufio.Reader) error {
	t := time.AfterFunc(10*time.Second, func() { _ = body.Close() })
	defer t.Stop()
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("centrifuge SSE connect: %v", err)
		}
		if len(line) <= 6 || string(line[:6]) != "data: " {
			continue
		}
		p := line[6 : len(line)-1]
		if err := cfCheckReply(p); err != nil {
			return err
		}
		cf.session, cf.node = jsonStringField(p, "session"), jsonStringField(p, "node")
		if cf.session == "" || cf.node == "" {
			return fmt.Errorf("centrifuge SSE connect: no session or node in %q", p)
		}
		return nil
	}
}

// jsonStringField finds "key":"value" in p (values without escapes: ids).
func jsonStringField(p []byte, key string) string {
	s := string(p)
	i := strings.Index(s, `"`+key+`":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(key)+4:]
	j := strings.IndexByte(s, '"')
	if j < 0 {
		return ""
	}
	return s[:j]
}

// pongSSE posts the pong to the emulation endpoint, off the reading goroutine.
func (cf *cfConn) pongSSE() {
	body := `{"session":"` + cf.session + `","node":"` + cf.node + `","data":"{}"}`
	go func() {
		resp, err := cfPongClient.Post("http://"+cf.addr+"/emulation", "application/json", strings.NewReader(body))
		if err != nil {
			cfPongErr.Do(func() { log.Printf("centrifuge SSE pong: %v", err) })
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			cfPongErr.Do(func() { log.Printf("centrifuge SSE pong: status %d", resp.StatusCode) })
		}
	}()
}
