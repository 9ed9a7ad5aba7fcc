// Command soak runs three instances of examples/cluster under load for a
// long time, with subscribers that churn and rolling restarts (SIGTERM and
// SIGKILL in turn), and reports over time: messages acknowledged and lost,
// ids delivered twice or out of order on one subscription (across its
// resumes), latency, and each instance's RSS, open files and goroutines.
// It is not part of CI; RELIABILITY.md holds its figures.
//
//	go build -o bin/cluster ../examples/cluster
//	go run ./soak -cluster bin/cluster -duration 20m
//
// Every subscriber resumes as the browser client does: on any failure it
// reconnects to a random other instance and subscribes with the last id it
// has. Publishers send every message with an idempotency key and retry it,
// with the same key, until it is acknowledged.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

type config struct {
	cluster       string
	duration      time.Duration
	subs, rooms   int
	sseSubs       int
	publishers    int
	rate          int
	churn         float64
	restartEvery  time.Duration
	report        time.Duration
	basePort      int
	routeBasePort int
}

func main() {
	var c config
	flag.StringVar(&c.cluster, "cluster", "bin/cluster", "the examples/cluster binary")
	flag.DurationVar(&c.duration, "duration", 20*time.Minute, "how long to run the load")
	flag.IntVar(&c.subs, "subs", 1500, "subscribers (WebSocket), spread over the instances")
	flag.IntVar(&c.sseSubs, "sse-subs", 500, "subscribers over SSE, as EventSource does (Last-Event-ID), besides -subs")
	flag.IntVar(&c.rooms, "rooms", 50, "rooms; subscriber i is in room i%rooms")
	flag.IntVar(&c.publishers, "publishers", 6, "publishing connections")
	flag.IntVar(&c.rate, "rate", 200, "messages per second, in all")
	flag.Float64Var(&c.churn, "churn", 0.15, "fraction of subscribers that leave and resume each minute")
	flag.DurationVar(&c.restartEvery, "restart-every", 150*time.Second, "restart one instance this often (0: never)")
	flag.DurationVar(&c.report, "report", 30*time.Second, "report interval")
	flag.IntVar(&c.basePort, "http-port", 18081, "first instance's HTTP port")
	flag.IntVar(&c.routeBasePort, "route-port", 16222, "first instance's route port")
	flag.Parse()
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

// instance is one child process of the cluster example.
type instance struct {
	n    int
	url  string
	args []string
	key  string

	mu  sync.Mutex
	cmd *exec.Cmd
}

func (in *instance) start() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	cmd := exec.Command(in.args[0], in.args[1:]...)
	cmd.Env = append(os.Environ(), "DEMO_SESSION_KEY="+in.key)
	logf, _ := os.Create(filepath.Join(os.TempDir(), fmt.Sprintf("soak-node%d.log", in.n)))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	in.cmd = cmd
	go func() { _ = cmd.Wait(); logf.Close() }()
	return nil
}

func (in *instance) signal(sig syscall.Signal) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd != nil && in.cmd.Process != nil {
		_ = in.cmd.Process.Signal(sig)
	}
}

func (in *instance) pid() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil || in.cmd.Process == nil {
		return 0
	}
	return in.cmd.Process.Pid
}

// world is what every client shares: the instances, the acknowledged
// messages per room, and the counters.
type world struct {
	c         config
	instances []*instance
	cookies   []*http.Cookie // one session per user, valid on every instance

	mu    sync.Mutex
	acked map[string][]uint64 // per room, in the order acknowledged

	delivered, dups, truncated, reconnects, publishErrors atomic.Int64
	latMu                                                 sync.Mutex
	lat                                                   []time.Duration // this report interval's

	endsMu sync.Mutex
	ends   map[string]int // why connections ended, this report interval
}

// ended records why a subscriber's connection ended.
func (w *world) ended(why string) {
	w.endsMu.Lock()
	w.ends[why]++
	w.endsMu.Unlock()
}

func run(c config) error {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(rand.IntN(256))
	}
	var urls, routes []string
	for i := range 3 {
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d", c.basePort+i))
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", c.routeBasePort+i))
	}
	w := &world{c: c, acked: make(map[string][]uint64), ends: map[string]int{}}
	for i := range 3 {
		in := &instance{n: i, url: urls[i], key: hex.EncodeToString(key), args: []string{c.cluster, "-node", strconv.Itoa(i),
			"-http", strings.TrimPrefix(urls[i], "http://"), "-route-port", strconv.Itoa(c.routeBasePort + i),
			"-routes", strings.Join(routes, ","), "-peers", strings.Join(urls, ",")}}
		if err := in.start(); err != nil {
			return err
		}
		w.instances = append(w.instances, in)
	}
	defer func() {
		for _, in := range w.instances {
			in.signal(syscall.SIGTERM)
		}
		time.Sleep(2 * time.Second)
	}()
	for _, u := range urls {
		if err := waitUp(u); err != nil {
			return err
		}
	}
	for i := range 200 {
		ck, err := login(urls[i%3], fmt.Sprint("u", i))
		if err != nil {
			return err
		}
		w.cookies = append(w.cookies, ck)
	}

	ctx, stop := context.WithCancel(context.Background())
	var subsWG, pubWG sync.WaitGroup
	subs := make([]*subscriber, c.subs+c.sseSubs)
	for i := range subs {
		subs[i] = &subscriber{w: w, n: i, room: fmt.Sprint("soak:r", i%c.rooms), inst: i % 3, sse: i >= c.subs}
		subsWG.Go(func() { subs[i].run(ctx) })
		if i%100 == 99 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second) // subscribed
	pubCtx, stopPub := context.WithCancel(ctx)
	for i := range c.publishers {
		pubWG.Go(func() { w.publisher(pubCtx, i) })
	}
	start := time.Now()
	fmt.Printf("# soak: 3 instances, %d WebSocket and %d SSE subscribers in %d rooms, %d msgs/s, churn %.0f%%/min, a restart every %v, for %v\n",
		c.subs, c.sseSubs, c.rooms, c.rate, c.churn*100, c.restartEvery, c.duration)
	fmt.Println("elapsed   acked  delivered  lost  dups  trunc  reconn  puberr   p50ms   p99ms   RSS MiB (n0/n1/n2)      fds           goroutines")
	report := time.NewTicker(c.report)
	defer report.Stop()
	var restart <-chan time.Time
	if c.restartEvery > 0 {
		t := time.NewTicker(c.restartEvery)
		defer t.Stop()
		restart = t.C
	}
	restarts := 0
	end := time.After(c.duration)
loop:
	for {
		select {
		case <-report.C:
			w.print(time.Since(start), subs, false)
		case <-restart:
			in := w.instances[restarts%3]
			sig := syscall.SIGTERM
			if restarts%2 == 1 {
				sig = syscall.SIGKILL
			}
			restarts++
			fmt.Printf("# %v: %v to node%d\n", time.Since(start).Round(time.Second), sig, in.n)
			in.signal(sig)
			go func() {
				time.Sleep(3 * time.Second)
				if err := in.start(); err != nil {
					log.Printf("restarting node%d: %v", in.n, err)
				}
			}()
		case <-end:
			break loop
		}
	}
	stopPub()
	pubWG.Wait()
	time.Sleep(10 * time.Second) // the last messages arrive
	stop()
	subsWG.Wait()
	lost, dups := w.print(time.Since(start), subs, true)
	if lost > 0 || dups > 0 {
		return fmt.Errorf("%d acknowledged messages lost, %d delivered twice or out of order", lost, dups)
	}
	return nil
}

func waitUp(u string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(u + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready: %v", u, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func login(base, name string) (*http.Cookie, error) {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := hc.PostForm(base+"/login", url.Values{"name": {name}})
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	u, _ := url.Parse(base)
	for _, ck := range jar.Cookies(u) {
		return ck, nil
	}
	return nil, fmt.Errorf("login %s: no cookie (%s)", name, resp.Status)
}

// dial connects to instance i as user n.
func (w *world) dial(ctx context.Context, i, user int) (*websocket.Conn, error) {
	u := strings.Replace(w.instances[i].url, "http", "ws", 1) + "/live"
	h := http.Header{"Cookie": {w.cookies[user%len(w.cookies)].String()}}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 22)
	return c, nil
}

type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Room string          `json:"room"`
	Ref  json.RawMessage `json:"ref"`
	Code string          `json:"code"`
	Data struct {
		T int64 `json:"t"`
	} `json:"data"`
}

// subscriber is one logical subscription that lives through reconnects.
type subscriber struct {
	w    *world
	n    int
	room string
	inst int
	sse  bool

	mu                sync.Mutex
	first, last       uint64 // the first and last ids received
	received          int64  // ids received, in order, once each
	truncatedAt       []uint64
	churnedOrRestarts int
}

func (s *subscriber) run(ctx context.Context) {
	if s.sse {
		s.runSSE(ctx)
		return
	}
	perMinute := s.w.c.churn
	for ctx.Err() == nil {
		c, err := s.w.dial(ctx, s.inst, s.n)
		if err != nil {
			s.moveOn(ctx)
			continue
		}
		s.mu.Lock()
		sub := map[string]any{"type": "subscribe", "room": s.room}
		if s.last > 0 {
			sub["last_id"] = strconv.FormatUint(s.last, 10)
		}
		s.mu.Unlock()
		if b, _ := json.Marshal(sub); c.Write(ctx, websocket.MessageText, b) != nil {
			c.CloseNow()
			s.moveOn(ctx)
			continue
		}
		// Leave at a random time, as a churning client does.
		leave := time.Duration(rand.ExpFloat64() / perMinute * float64(time.Minute))
		cctx, cancel := context.WithTimeout(ctx, leave)
		s.read(cctx, c)
		churned := cctx.Err() != nil // before cancel, which sets it
		cancel()
		c.CloseNow()
		s.w.reconnects.Add(1)
		if ctx.Err() == nil && !churned {
			s.moveOn(ctx) // the connection failed: another instance
		}
	}
}

func (s *subscriber) moveOn(ctx context.Context) {
	s.inst = (s.inst + 1 + rand.IntN(2)) % 3
	select {
	case <-time.After(time.Duration(500+rand.IntN(1500)) * time.Millisecond):
	case <-ctx.Done():
	}
}

func (s *subscriber) read(ctx context.Context, c *websocket.Conn) {
	for {
		_, p, err := c.Read(ctx)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				s.w.ended("ws left (churn)")
			case websocket.CloseStatus(err) != -1:
				s.w.ended(fmt.Sprintf("ws close %d", websocket.CloseStatus(err)))
			default:
				s.w.ended("ws error")
			}
			return
		}
		now := time.Now().UnixNano()
		for line := range strings.SplitSeq(string(p), "\n") {
			s.handle(line, now)
		}
	}
}

// handle records one frame.
func (s *subscriber) handle(line string, now int64) {
	var f frame
	if json.Unmarshal([]byte(line), &f) != nil {
		return
	}
	switch f.Type {
	case "message":
		seq, _ := strconv.ParseUint(f.ID, 10, 64)
		s.mu.Lock()
		if seq <= s.last {
			s.w.dups.Add(1)
		} else {
			if s.first == 0 {
				s.first = seq
			}
			s.last = seq
			s.received++
		}
		s.mu.Unlock()
		s.w.delivered.Add(1)
		if f.Data.T > 0 {
			s.w.latMu.Lock()
			s.w.lat = append(s.w.lat, time.Duration(now-f.Data.T))
			s.w.latMu.Unlock()
		}
	case "truncated":
		s.w.truncated.Add(1)
		s.mu.Lock()
		s.truncatedAt = append(s.truncatedAt, s.last)
		s.mu.Unlock()
	}
}

// runSSE subscribes as an EventSource does: a GET with the room in the
// query and, on every reconnect, the last id in Last-Event-ID; a stream
// that ends (a restart, the stream's maximum age) is opened again.
func (s *subscriber) runSSE(ctx context.Context) {
	perMinute := s.w.c.churn
	for ctx.Err() == nil {
		leave := time.Duration(rand.ExpFloat64() / perMinute * float64(time.Minute))
		cctx, cancel := context.WithTimeout(ctx, leave)
		_ = s.stream(cctx)
		churned := cctx.Err() != nil // before cancel, which sets it
		cancel()
		s.w.reconnects.Add(1)
		if ctx.Err() == nil && !churned {
			s.moveOn(ctx) // the stream ended or failed: another instance
		}
	}
}

func (s *subscriber) stream(ctx context.Context) error {
	u := s.w.instances[s.inst].url + "/live?room=" + url.QueryEscape(s.room)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cookie", s.w.cookies[s.n%len(s.w.cookies)].String())
	s.mu.Lock()
	if s.last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(s.last, 10))
	}
	s.mu.Unlock()
	resp, err := sseClient.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			s.w.ended("sse dial error")
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.w.ended("sse status " + resp.Status)
		return fmt.Errorf("status %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<22)
	why := "sse eof"
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if strings.HasPrefix(data, `{"type":"close"`) {
				why = "sse " + data
			}
			s.handle(data, time.Now().UnixNano())
		}
	}
	switch {
	case ctx.Err() != nil:
		why = "sse left (churn)"
	case sc.Err() != nil && why == "sse eof":
		why = "sse error"
	}
	s.w.ended(why)
	return nil // ended by the server, or by ctx
}

var sseClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableKeepAlives: true}}

// publisher sends its share of the rate, each message with a key it
// retries until acknowledged.
func (w *world) publisher(ctx context.Context, n int) {
	every := time.Duration(float64(time.Second) * float64(w.c.publishers) / float64(w.c.rate))
	inst := n % 3
	var c *websocket.Conn
	defer func() {
		if c != nil {
			c.CloseNow()
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		room := fmt.Sprint("soak:r", rand.IntN(w.c.rooms))
		key := fmt.Sprintf("p%d-%d", n, seq)
		for try := 0; ctx.Err() == nil; try++ {
			if c == nil {
				var err error
				if c, err = w.dial(ctx, inst, 1000+n); err != nil {
					inst = (inst + 1) % 3
					time.Sleep(200 * time.Millisecond)
					continue
				}
			}
			id, err := publishOnce(ctx, c, room, key)
			if err == nil {
				w.mu.Lock()
				w.acked[room] = append(w.acked[room], id)
				w.mu.Unlock()
				break
			}
			w.publishErrors.Add(1)
			if !strings.HasPrefix(err.Error(), "code ") { // the connection failed
				c.CloseNow()
				c = nil
				inst = (inst + 1) % 3
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func publishOnce(ctx context.Context, c *websocket.Conn, room, key string) (uint64, error) {
	b, _ := json.Marshal(map[string]any{"type": "publish", "room": room, "key": key, "ref": key,
		"data": map[string]int64{"t": time.Now().UnixNano()}})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Write(wctx, websocket.MessageText, b); err != nil {
		return 0, err
	}
	for {
		_, p, err := c.Read(wctx)
		if err != nil {
			return 0, err
		}
		for line := range strings.SplitSeq(string(p), "\n") {
			var f frame
			if json.Unmarshal([]byte(line), &f) != nil || string(f.Ref) != strconv.Quote(key) {
				continue
			}
			if f.Type == "published" {
				return strconv.ParseUint(f.ID, 10, 64)
			}
			return 0, fmt.Errorf("code %s", f.Code)
		}
	}
}

// print reports the interval; final also computes losses exactly.
func (w *world) print(elapsed time.Duration, subs []*subscriber, final bool) (lost, dups int64) {
	w.mu.Lock()
	acked := make(map[string][]uint64, len(w.acked))
	total := 0
	for r, ids := range w.acked {
		s := slices.Clone(ids)
		slices.Sort(s)
		acked[r] = s
		total += len(s)
	}
	w.mu.Unlock()
	for _, s := range subs {
		s.mu.Lock()
		if s.first > 0 {
			ids := acked[s.room]
			lo, _ := slices.BinarySearch(ids, s.first)
			hi, found := slices.BinarySearch(ids, s.last)
			if found {
				hi++
			}
			want := int64(hi - lo)
			// Truncated spans are announced gaps, not losses.
			if l := want - s.received; l > 0 && len(s.truncatedAt) == 0 {
				lost += l
			}
		}
		s.mu.Unlock()
	}
	w.latMu.Lock()
	lat := w.lat
	w.lat = nil
	w.latMu.Unlock()
	slices.Sort(lat)
	q := func(f float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(f*float64(len(lat)-1))]) / 1e6
	}
	var rss, fds, gor []string
	for _, in := range w.instances {
		r, f := procStats(in.pid())
		rss, fds = append(rss, strconv.Itoa(r>>10)), append(fds, strconv.Itoa(f))
		gor = append(gor, goroutines(in.url))
	}
	dups = w.dups.Load()
	fmt.Printf("%7s %7d %10d %5d %5d %6d %7d %7d %7.1f %7.1f   %-22s %-14s %s\n",
		elapsed.Round(time.Second), total, w.delivered.Load(), lost, dups, w.truncated.Load(), w.reconnects.Load(),
		w.publishErrors.Load(), q(0.5), q(0.99), strings.Join(rss, "/"), strings.Join(fds, "/"), strings.Join(gor, "/"))
	w.endsMu.Lock()
	if len(w.ends) > 0 {
		var parts []string
		for why, n := range w.ends {
			parts = append(parts, fmt.Sprintf("%s: %d", why, n))
		}
		slices.Sort(parts)
		fmt.Printf("#   ends: %s\n", strings.Join(parts, "; "))
		clear(w.ends)
	}
	w.endsMu.Unlock()
	if final {
		fmt.Printf("# final: %d acknowledged, %d lost, %d delivered twice or out of order on a subscription\n", total, lost, dups)
	}
	return lost, dups
}

// procStats reads a process's resident memory (KiB) and open files.
func procStats(pid int) (rssKiB, fds int) {
	if pid == 0 {
		return 0, 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rssKiB, len(ents)
}

// goroutines reads go_goroutines from the instance's /metrics.
func goroutines(base string) string {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		return "-"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			return v
		}
	}
	return "-"
}
