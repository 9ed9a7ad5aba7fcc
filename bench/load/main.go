// Command load is the load generator and driver of the benchmark harness.
// For each implementation it starts the server binary, dials subscribers on
// loopback, triggers bursts of server-side publishes and reports delivery
// rate, latency, loss, and the server's memory and CPU from /proc.
//
//	load -server ./server -impls roomcast,centrifuge,gorilla,melody -conns 10000 -n 100 -bursts 5
//	load -server ./server -instances 1,3 -conns 15000 -n 20 -bursts 5   # roomcast cluster (cluster.go)
//	load -server ./server -paced -conns 10000 -rooms 100 -rates 1000,2000,5000 -duration 10s   # paced ladder (paced.go)
//
// One JSON line per run goes to -json (appended); a table goes to stdout.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	label, server, transport, target string
	impls                            []string
	impl                             string // the one being run: its subscribers speak its protocol
	conns, rooms, users              int
	n, size, bursts                  int
	interval, pause, timeout         time.Duration
	dialConcurrency                  int
	jsonOut                          string
	hold                             time.Duration
	cpuProfile                       string
	srcBase                          int    // first source address 127.0.0.srcBase
	instances                        string // cluster mode: "1,3" = one run per instance count
	child                            bool   // cluster mode: subscriber process (cluster.go)
	childAddr                        string
	paced                            bool // paced mode (paced.go)
	rates                            []float64
	duration, settle, stopP99, good  time.Duration
	abortLate                        time.Duration
}

func main() {
	var c config
	var impls string
	flag.StringVar(&c.label, "label", "", "workload name for the report")
	flag.StringVar(&c.server, "server", "./server", "server binary")
	flag.StringVar(&impls, "impls", "roomcast,centrifuge,gorilla,melody", "implementations to run, in order")
	flag.StringVar(&c.transport, "transport", "ws", "ws or sse")
	flag.StringVar(&c.target, "target", "room", "publish to room or user")
	flag.IntVar(&c.conns, "conns", 1000, "subscribers")
	flag.IntVar(&c.rooms, "rooms", 1, "rooms; subscriber i joins room r<i%rooms>")
	flag.IntVar(&c.users, "users", 0, "users; subscriber i is user u<i%users> (0: anonymous)")
	flag.IntVar(&c.n, "n", 100, "messages per burst, spread over the targets")
	flag.IntVar(&c.size, "size", 64, "message size in bytes")
	flag.IntVar(&c.bursts, "bursts", 5, "measured bursts")
	flag.DurationVar(&c.interval, "interval", 0, "pause between messages of a burst (0: as fast as possible)")
	flag.DurationVar(&c.pause, "pause", 200*time.Millisecond, "pause between bursts")
	flag.DurationVar(&c.timeout, "timeout", 60*time.Second, "cap on one burst's delivery")
	flag.IntVar(&c.dialConcurrency, "dial-concurrency", 200, "dials in flight")
	flag.DurationVar(&c.hold, "hold", 0, "after measuring idle memory, wait this long (to take a profile)")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a 5 s CPU profile of the server, taken during the bursts, to this file")
	flag.StringVar(&c.jsonOut, "json", "", "append one JSON line per run to this file")
	flag.IntVar(&c.srcBase, "src-base", 1, "dial from 127.0.0.<src-base>, one more address per 20,000 connections")
	flag.StringVar(&c.instances, "instances", "", "cluster mode (roomcast only): comma-separated instance counts, e.g. 1,3; "+
		"-conns is then per instance, each instance is its own server process with its own subscriber process, "+
		"and every message is published on instance 0")
	flag.BoolVar(&c.child, "child", false, "internal: run as the subscriber process of one instance (see cluster.go)")
	flag.StringVar(&c.childAddr, "addr", "", "internal: with -child, the server address")
	var rates string
	flag.BoolVar(&c.paced, "paced", false, "paced mode: for each implementation, one server and one set of subscribers, "+
		"and on it a ladder of fixed publish rates (-rates) over -rooms rooms, each for -duration")
	flag.StringVar(&rates, "rates", "1000,2000,5000,10000", "paced: total publish rates to climb, messages/s over all rooms")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "paced: how long each rate is offered")
	flag.DurationVar(&c.settle, "settle", 2*time.Second, "paced: pause between rates")
	flag.DurationVar(&c.stopP99, "stop-p99", time.Second, "paced: stop climbing an implementation's ladder past this p99 (or at any loss)")
	flag.DurationVar(&c.good, "good-p99", 50*time.Millisecond, "paced: report the highest rate with p99 under this, without loss")
	flag.DurationVar(&c.abortLate, "abort-late", 10*time.Second, "paced: the server's publisher gives up a rate once this far behind schedule (0: never)")
	flag.Parse()
	c.impls = strings.Split(impls, ",")
	for _, f := range strings.Split(rates, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			log.Fatalf("-rates: bad rate %q", f)
		}
		c.rates = append(c.rates, v)
	}
	raiseFileLimit()
	if c.child {
		runChild(c)
		return
	}
	if c.instances != "" {
		runClusters(c)
		return
	}
	if c.paced {
		runPaced(c)
		return
	}

	var results []result
	for _, im := range c.impls {
		r, err := run(c, im)
		if err != nil {
			log.Printf("%s: %v", im, err)
			continue
		}
		results = append(results, r)
		if c.jsonOut != "" {
			f, err := os.OpenFile(c.jsonOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				_ = json.NewEncoder(f).Encode(r)
				f.Close()
			}
		}
	}
	printTable(c, results)
}

type result struct {
	Workload       string    `json:"workload"`
	Impl           string    `json:"impl"`
	Transport      string    `json:"transport"`
	Target         string    `json:"target"`
	Conns          int       `json:"conns"`
	Connected      int       `json:"connected"`
	DialSeconds    float64   `json:"dial_s"`
	DialErrors     int       `json:"dial_errors"`
	Subscribed     int       `json:"subscribed"`
	BaseRSSMB      float64   `json:"base_rss_mb"`
	IdleRSSMB      float64   `json:"idle_rss_mb"`
	RSSPerConnKiB  float64   `json:"rss_per_conn_kib"`
	Expected       int64     `json:"expected_per_burst"`
	BurstRates     []float64 `json:"burst_deliveries_per_s"`
	DeliveriesPerS float64   `json:"deliveries_per_s"`
	// MessagesPerFrame is the batching: deliveries per WebSocket frame (SSE:
	// per read) carrying at least one message of the burst.
	MessagesPerFrame float64 `json:"messages_per_frame"`
	CPUPerMillion    float64 `json:"cpu_s_per_1m"`
	P50ms            float64 `json:"p50_ms"`
	P90ms            float64 `json:"p90_ms"`
	P99ms            float64 `json:"p99_ms"`
	Maxms            float64 `json:"max_ms"`
	Missing          int64   `json:"missing"`
	Duplicates       int64   `json:"duplicates"`
	OutOfOrder       int64   `json:"out_of_order"`
	Disconnected     int     `json:"disconnected"`
	PeakRSSMB        float64 `json:"peak_rss_mb"`
	ServerGoroutine  string  `json:"-"`
}

// session is one implementation's server, started, with its subscribers
// dialed and warmed up.
type session struct {
	cmd     *exec.Cmd
	pid     int
	base    string // http://addr
	st      *state
	conns   []*subscriber
	targets int // rooms, or users with -target user
}

func (s *session) close() {
	for _, cn := range s.conns {
		cn.close()
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// startSession starts the server for impl, measures its baseline RSS, dials
// the subscribers, warms up (one message per target until every subscriber
// has one, which also proves every subscription is in place) and measures
// idle RSS, filling those fields of r. On error nothing is left running.
func startSession(c config, impl string, r *result) (*session, error) {
	cmd := exec.Command(c.server, "-impl", impl)
	cmd.Stderr = os.Stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &session{cmd: cmd, pid: cmd.Process.Pid, st: &state{}}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		s.close()
		return nil, fmt.Errorf("server did not start: %v", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	pid := s.pid
	base := "http://" + addr
	s.base = base

	control(base + "/control/gc")
	time.Sleep(200 * time.Millisecond)
	control(base + "/control/gc")
	r.BaseRSSMB = float64(rssKiB(pid)) / 1024

	st := s.st
	start := time.Now()
	c.impl = impl
	conns, dialErrs := dialAll(c, addr, st)
	s.conns = conns
	r.DialSeconds = time.Since(start).Seconds()
	r.DialErrors = dialErrs
	r.Connected = len(conns)
	if len(conns) == 0 {
		s.close()
		return nil, fmt.Errorf("no connection")
	}

	// Warm-up: one message per target until every subscriber has one, which
	// also proves every subscription is in place.
	targets := c.rooms
	if c.target == "user" {
		targets = c.users
	}
	s.targets = targets
	st.reset(0, conns)
	trigger(c, base, 0, targets, targets)
	waitFor(func() bool { return st.delivered.Load() >= int64(len(conns)) }, 15*time.Second)
	for _, cn := range conns {
		if cn.got > 0 {
			r.Subscribed++
		}
	}

	time.Sleep(300 * time.Millisecond)
	control(base + "/control/gc")
	time.Sleep(200 * time.Millisecond)
	control(base + "/control/gc")
	r.IdleRSSMB = float64(rssKiB(pid)) / 1024
	r.RSSPerConnKiB = (r.IdleRSSMB - r.BaseRSSMB) * 1024 / float64(len(conns))
	if c.hold > 0 { // keep the idle connections open for a profile
		log.Printf("holding %d idle connections on %s (pid %d) for %v", len(conns), base, pid, c.hold)
		time.Sleep(c.hold)
	}
	return s, nil
}

// run measures one implementation.
func run(c config, impl string) (result, error) {
	r := result{Workload: c.label, Impl: impl, Transport: c.transport, Target: c.target, Conns: c.conns}
	s, err := startSession(c, impl, &r)
	if err != nil {
		return r, err
	}
	defer s.close()
	pid, base, st, conns, targets := s.pid, s.base, s.st, s.conns, s.targets

	// Each conn receives the messages of its target: n/targets each.
	perConn := int64(c.n / targets)
	r.Expected = perConn * int64(len(conns))
	if c.cpuProfile != "" {
		go func() {
			resp, err := http.Get(base + "/debug/pprof/profile?seconds=5")
			if err != nil {
				log.Print(err)
				return
			}
			defer resp.Body.Close()
			f, _ := os.Create(c.cpuProfile + "." + impl)
			_, _ = io.Copy(f, resp.Body)
			f.Close()
		}()
	}
	var hist histogram
	var cpuTotal float64
	var delivered, frames int64
	for b := 1; b <= c.bursts; b++ {
		st.reset(int64(b), conns)
		cpu0 := cpuSeconds(pid)
		t0 := time.Now()
		done := make(chan struct{})
		go func() { trigger(c, base, b, targets, c.n); close(done) }()
		waitFor(func() bool { return st.delivered.Load() >= r.Expected }, c.timeout)
		<-done
		last := t0
		for _, cn := range conns {
			cn.mu.Lock()
			if cn.last.After(last) {
				last = cn.last
			}
			cn.mu.Unlock()
		}
		cpuTotal += cpuSeconds(pid) - cpu0
		got := st.delivered.Load()
		delivered += got
		r.BurstRates = append(r.BurstRates, float64(got)/last.Sub(t0).Seconds())
		for _, cn := range conns {
			cn.mu.Lock()
			hist.merge(&cn.hist)
			r.Missing += max(perConn-int64(cn.got), 0)
			r.Duplicates += int64(cn.dup)
			r.OutOfOrder += int64(cn.disorder)
			frames += int64(cn.frames)
			cn.mu.Unlock()
		}
		r.PeakRSSMB = max(r.PeakRSSMB, float64(rssKiB(pid))/1024)
		time.Sleep(c.pause)
	}
	for _, cn := range conns {
		if cn.closed.Load() {
			r.Disconnected++
		}
	}
	r.DeliveriesPerS = median(r.BurstRates)
	if delivered > 0 {
		r.CPUPerMillion = cpuTotal / float64(delivered) * 1e6
	}
	if frames > 0 {
		r.MessagesPerFrame = float64(delivered) / float64(frames)
	}
	r.P50ms, r.P90ms, r.P99ms, r.Maxms = hist.quantile(0.50), hist.quantile(0.90), hist.quantile(0.99), hist.max()
	return r, nil
}

func trigger(c config, base string, burst, targets, n int) {
	path := "/control/publish"
	prefix := "r"
	if c.target == "user" {
		path, prefix = "/control/user", "u"
	}
	q := url.Values{"prefix": {prefix}, "targets": {strconv.Itoa(targets)}, "n": {strconv.Itoa(n)},
		"size": {strconv.Itoa(c.size)}, "burst": {strconv.Itoa(burst)}, "interval": {c.interval.String()}}
	control(base + path + "?" + q.Encode())
}

func control(u string) {
	resp, err := http.Get(u)
	if err != nil {
		log.Printf("control %s: %v", u, err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// waitFor polls cond every millisecond, or every every[0], until it holds
// or timeout has passed.
func waitFor(cond func() bool, timeout time.Duration, every ...time.Duration) bool {
	step := time.Millisecond
	if len(every) > 0 {
		step = every[0]
	}
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(step)
	}
	return true
}

// state is shared by all subscribers of a run.
type state struct {
	burst     atomic.Int64
	delivered atomic.Int64
}

func (s *state) reset(burst int64, conns []*subscriber) {
	for _, c := range conns {
		c.mu.Lock()
		c.next, c.got, c.dup, c.disorder, c.frames = 0, 0, 0, 0, 0
		c.hist = histogram{}
		c.mu.Unlock()
	}
	s.delivered.Store(0)
	s.burst.Store(burst)
}

// subscriber is one connection of the load generator.
type subscriber struct {
	st     *state
	target int // index of its room (or user, -target user): it gets the messages to prefix+target
	nc     net.Conn
	body   io.ReadCloser // SSE
	closed atomic.Bool
	cf     *cfConn // centrifuge: its protocol's connect and pongs; nil for the others
	// roomcast over WebSocket: frames to see before the connection counts
	// as dialed: its welcome (sent once its user's subscription is made)
	// and one "subscribed" per room, so that the probe cannot overtake them.
	rcReady int

	mu       sync.Mutex
	next     int // next expected seq in the current burst
	got      int
	frames   int // frames (SSE events) with at least one message of the burst
	dup      int
	disorder int
	last     time.Time
	hist     histogram
}

func (s *subscriber) close() {
	if s.nc != nil {
		_ = s.nc.Close()
	}
	if s.body != nil {
		_ = s.body.Close()
	}
}

// handle processes one frame or event payload: one or more messages
// separated by newlines. Lines without a burst field (roomcast's welcome and
// subscribed frames) are ignored.
func (s *subscriber) handle(p []byte) {
	now := time.Now()
	cur := s.st.burst.Load()
	var n int64
	s.mu.Lock()
	for len(p) > 0 {
		line := p
		if i := indexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		b, seq, ts, ok := parseMessage(line)
		if !ok || b != cur {
			continue
		}
		switch {
		case seq == int64(s.next):
			s.next++
			s.got++
			n++
		case seq > int64(s.next): // a gap: counted missing unless it arrives later
			s.disorder++
			s.next = int(seq) + 1
			s.got++
			n++
		default:
			s.dup++
		}
		s.hist.add(now.UnixNano() - ts)
	}
	s.last = now
	if n > 0 {
		s.frames++
	}
	s.mu.Unlock()
	if n > 0 {
		s.st.delivered.Add(n)
	}
}

func indexByte(p []byte, c byte) int {
	for i, v := range p {
		if v == c {
			return i
		}
	}
	return -1
}

// parseMessage finds {"b":B,"s":S,"t":T in a line, wherever the
// implementation's envelope puts the payload.
func parseMessage(line []byte) (b, s, t int64, ok bool) {
	const key = `{"b":`
	i := strings.Index(string(line), key) // no allocation: the conversion is optimized away
	if i < 0 {
		return 0, 0, 0, false
	}
	p := line[i+len(key):]
	b, p, ok = parseInt(p)
	if !ok || !hasPrefix(p, `,"s":`) {
		return 0, 0, 0, false
	}
	s, p, ok = parseInt(p[5:])
	if !ok || !hasPrefix(p, `,"t":`) {
		return 0, 0, 0, false
	}
	t, _, ok = parseInt(p[5:])
	return b, s, t, ok
}

func hasPrefix(p []byte, s string) bool { return len(p) >= len(s) && string(p[:len(s)]) == s }

func parseInt(p []byte) (int64, []byte, bool) {
	neg := len(p) > 0 && p[0] == '-'
	if neg {
		p = p[1:]
	}
	var v int64
	i := 0
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		v = v*10 + int64(p[i]-'0')
	}
	if i == 0 {
		return 0, p, false
	}
	if neg {
		v = -v
	}
	return v, p[i:], true
}

// dialAll connects c.conns subscribers, c.dialConcurrency at a time.
func dialAll(c config, addr string, st *state) ([]*subscriber, int) {
	host, port, _ := net.SplitHostPort(addr)
	_ = host
	var mu sync.Mutex
	conns := make([]*subscriber, 0, c.conns)
	var errs int
	sem := make(chan struct{}, c.dialConcurrency)
	var wg sync.WaitGroup
	var firstErr sync.Once
	for i := range c.conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			q := url.Values{"room": {"r" + strconv.Itoa(i%c.rooms)}}
			if c.users > 0 {
				q.Set("user", "u"+strconv.Itoa(i%c.users))
			}
			// Past ~20k sockets per source address the ephemeral ports run
			// out: use 127.0.0.2, .3, … as extra sources.
			src := net.IPv4(127, 0, 0, byte(c.srcBase+i/20000))
			s := &subscriber{st: st, target: i % c.rooms}
			if c.target == "user" && c.users > 0 {
				s.target = i % c.users
			}
			if c.impl == "centrifuge" {
				s.cf = &cfConn{addr: "127.0.0.1:" + port}
			}
			if strings.HasPrefix(c.impl, "roomcast") {
				s.rcReady = 1 + len(q["room"])
			}
			var err error
			if c.transport == "sse" {
				err = s.dialSSE(src, "127.0.0.1:"+port, q)
			} else {
				err = s.dialWS(src, "127.0.0.1:"+port, q)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				firstErr.Do(func() { log.Printf("dial: %v", err) })
				return
			}
			conns = append(conns, s)
		}()
	}
	wg.Wait()
	return conns, errs
}

// dialer binds extra source addresses without choosing a port at bind
// time (IP_BIND_ADDRESS_NO_PORT), so ports in TIME_WAIT from earlier runs
// do not run the range out.
func dialer(src net.IP) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if !src.Equal(net.IPv4(127, 0, 0, 1)) {
		d.LocalAddr = &net.TCPAddr{IP: src}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24, 1) })
			if err != nil {
				return err
			}
			return serr
		}
	}
	return d
}

// dialWS is a minimal WebSocket client: the handshake, then a reader that
// handles text, continuation, ping and close frames without allocating per
// message.
func (s *subscriber) dialWS(src net.IP, addr string, q url.Values) error {
	nc, err := dialer(src).Dial("tcp", addr)
	if err != nil {
		return err
	}
	req := "GET /ws?" + q.Encode() + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return err
	}
	br := bufio.NewReaderSize(nc, 4096)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 101 ") {
		nc.Close()
		return fmt.Errorf("handshake: %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			nc.Close()
			return err
		}
		if line == "\r\n" {
			break
		}
	}
	s.nc = nc
	if s.cf != nil {
		if err := s.cf.connectWS(nc, br); err != nil {
			nc.Close()
			return err
		}
	}
	for s.rcReady > 0 { // within the handshake's deadline
		_, p, err := readFrameAlloc(br)
		if err != nil {
			nc.Close()
			return fmt.Errorf("waiting for welcome and subscribed: %w", err)
		}
		for _, line := range strings.Split(string(p), "\n") {
			if strings.Contains(line, `"type":"welcome"`) || strings.Contains(line, `"type":"subscribed"`) {
				s.rcReady--
			}
		}
	}
	_ = nc.SetDeadline(time.Time{})
	go s.readWS(br)
	return nil
}

func (s *subscriber) readWS(br *bufio.Reader) {
	defer s.closed.Store(true)
	var hdr [8]byte
	var msg []byte
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		fin, op := hdr[0]&0x80 != 0, hdr[0]&0x0f
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return
			}
			n = int(hdr[0])<<8 | int(hdr[1])
		case 127:
			if _, err := io.ReadFull(br, hdr[:8]); err != nil {
				return
			}
			n = 0
			for _, b := range hdr {
				n = n<<8 | int(b)
			}
		}
		start := len(msg)
		if op != 0 { // not a continuation
			start = 0
		}
		if cap(msg) < start+n {
			msg = slices.Grow(msg[:start], n)
		}
		msg = msg[:start+n]
		if _, err := io.ReadFull(br, msg[start:]); err != nil {
			return
		}
		switch op {
		case 0x8: // close
			return
		case 0x9: // ping: answer with a masked pong (zero mask)
			pong := append([]byte{0x8a, 0x80 | byte(n), 0, 0, 0, 0}, msg[start:]...)
			_ = s.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := s.nc.Write(pong); err != nil {
				return
			}
			msg = msg[:0]
			continue
		case 0xa:
			msg = msg[:0]
			continue
		}
		if fin {
			if s.cf != nil && !s.cf.pongWS(s.nc, msg) {
				return
			}
			s.handle(msg)
			msg = msg[:0]
		}
	}
}

// dialSSE subscribes with an SSE GET; net/http handles the chunked body.
func (s *subscriber) dialSSE(src net.IP, addr string, q url.Values) error {
	tr := &http.Transport{DialContext: dialer(src).DialContext, DisableCompression: true, MaxIdleConns: -1}
	if s.cf != nil {
		q.Set("cf_connect", cfConnectCommand) // the connect command, as centrifuge-js's SSE transport passes it
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+addr+"/ws?"+q.Encode(), nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fmt.Errorf("SSE status %d", resp.StatusCode)
	}
	s.body = resp.Body
	br := bufio.NewReaderSize(resp.Body, 4096)
	if s.cf != nil {
		if err := s.cf.connectSSE(resp.Body, br); err != nil {
			resp.Body.Close()
			return err
		}
	}
	go s.readSSE(br)
	return nil
}

func (s *subscriber) readSSE(br *bufio.Reader) {
	defer s.closed.Store(true)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		if len(line) > 6 && string(line[:6]) == "data: " {
			if s.cf != nil && string(line) == "data: {}\n" { // centrifuge's ping
				s.cf.pongSSE()
				continue
			}
			s.handle(line[6 : len(line)-1])
		}
	}
}

// histogram buckets latencies log-linearly: 16 sub-buckets per power of
// two of microseconds (about 6% resolution).
type histogram struct {
	counts [64 * 16]uint32
	maxNs  int64
}

func bucket(us int64) int {
	if us < 16 {
		return int(max(us, 0))
	}
	exp := 63 - leadingZeros(uint64(us))
	mant := int((us >> (exp - 4)) & 15)
	return (exp-3)*16 + mant
}

func bucketValue(i int) float64 { // lower bound, in microseconds
	if i < 16 {
		return float64(i)
	}
	exp := i/16 + 3
	mant := i % 16
	return float64(int64(16+mant) << (exp - 4))
}

func leadingZeros(x uint64) int {
	n := 0
	for i := 63; i >= 0 && x&(1<<uint(i)) == 0; i-- {
		n++
	}
	return n
}

func (h *histogram) add(ns int64) {
	h.counts[bucket(ns/1000)]++
	h.maxNs = max(h.maxNs, ns)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.maxNs = max(h.maxNs, o.maxNs)
}

func (h *histogram) quantile(q float64) float64 {
	var total uint64
	for _, c := range h.counts {
		total += uint64(c)
	}
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var acc uint64
	for i, c := range h.counts {
		acc += uint64(c)
		if acc > want {
			return bucketValue(i) / 1000
		}
	}
	return h.max()
}

func (h *histogram) max() float64 { return float64(h.maxNs) / 1e6 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// rssKiB reads VmRSS of pid.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// cpuSeconds reads utime+stime of pid (and its finished threads).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is f[0]; utime, stime are fields 14, 15 of the line.
	ut, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (ut + stime) / 100 // USER_HZ
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func printTable(c config, rs []result) {
	fmt.Printf("\n%s: %d %s subscribers, %d rooms, %d users, target %s, %d bursts of %d × %d B\n",
		c.label, c.conns, c.transport, c.rooms, c.users, c.target, c.bursts, c.n, c.size)
	fmt.Printf("%-10s %7s %6s %5s %9s %12s %8s %6s %8s %8s %8s %8s %7s %5s %5s\n",
		"impl", "conns", "dial s", "subs", "KiB/conn", "deliveries/s", "CPU/1M", "msg/fr", "p50 ms", "p90 ms", "p99 ms", "max ms", "missing", "dup", "order")
	for _, r := range rs {
		fmt.Printf("%-10s %7d %6.2f %5d %9.1f %12.0f %8.2f %6.1f %8.2f %8.2f %8.2f %8.1f %7d %5d %5d\n",
			r.Impl, r.Connected, r.DialSeconds, r.Subscribed, r.RSSPerConnKiB, r.DeliveriesPerS, r.CPUPerMillion, r.MessagesPerFrame,
			r.P50ms, r.P90ms, r.P99ms, r.Maxms, r.Missing, r.Duplicates, r.OutOfOrder)
	}
	for _, name := range []string{"centrifuge", "gorilla"} { // the strongest peer first
		var ref *result
		for i := range rs {
			if rs[i].Impl == name {
				ref = &rs[i]
			}
		}
		if ref == nil || ref.DeliveriesPerS <= 0 || ref.CPUPerMillion <= 0 || ref.RSSPerConnKiB <= 0 {
			continue
		}
		fmt.Printf("ratios against %s in this run (deliveries/s ×, CPU per 1M ×, RSS per conn ×):\n", name)
		for _, r := range rs {
			fmt.Printf("  %-10s %5.2f× %5.2f× %5.2f×\n", r.Impl, r.DeliveriesPerS/ref.DeliveriesPerS, r.CPUPerMillion/ref.CPUPerMillion, r.RSSPerConnKiB/ref.RSSPerConnKiB)
		}
	}
}
