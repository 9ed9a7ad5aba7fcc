package testkit

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy on loopback whose answers can be held back: while
// held, what the target sends is kept (in order) until Release. A client
// behind it sees a request sent and its answer lost, as when a network
// drops the acknowledgement of a write that happened.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	held  bool
	cond  *sync.Cond
	conns []net.Conn
	wg    sync.WaitGroup
}

// NewProxy forwards a loopback port to target until the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Hold keeps what the target sends from now on.
func (p *Proxy) Hold() { p.mu.Lock(); p.held = true; p.mu.Unlock() }

// Release forwards what was held, and everything after it.
func (p *Proxy) Release() { p.mu.Lock(); p.held = false; p.cond.Broadcast(); p.mu.Unlock() }

// Close ends the proxy and its connections.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.held = false
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, t)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(t, c); t.Close() })
		p.wg.Go(func() { p.answers(c, t); c.Close() })
	}
}

// answers copies the target's bytes to the client, waiting while held.
func (p *Proxy) answers(c, t net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := t.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.held {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
