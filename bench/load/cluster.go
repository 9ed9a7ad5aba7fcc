// Cluster mode (-instances): roomcast instances, each its own server
// process whose embedded NATS node joins the others over loopback routes,
// with one subscriber process per instance.
//
// One process cannot hold more sockets than its file limit (20,000 here), so
// the subscribers of each instance live in a child: this binary re-executed
// with -child, which dials -conns connections to its instance and then
// answers one-line commands on stdin with one JSON line on stdout:
//
//	reset B    start counting burst B (acknowledged once every counter is zero)
//	count      messages of the current burst received so far, all connections
//	subs       connections that received at least one message of the burst
//	report P   the burst's receipts: connections with at least one, last receipt
//	           time, missing (against P per connection), duplicates, out of
//	           order, closed connections, and the latency histogram
//
// The parent starts the servers, waits for a full mesh of routes (nats-server
// /routez on each node), starts the children, publishes probes on instance 0
// until every connection of every child has received one (so every node's
// room interest has reached instance 0), then triggers the bursts on
// instance 0 and adds up the children's reports. Latency is receipt time
// minus the publish timestamp in the payload (one machine, one clock).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// childReply is every line a child writes.
type childReply struct {
	Connected    int        `json:"connected,omitempty"`
	DialErrors   int        `json:"dial_errors,omitempty"`
	DialSeconds  float64    `json:"dial_s,omitempty"`
	Delivered    int64      `json:"delivered,omitempty"`
	Frames       int64      `json:"frames,omitempty"`
	Subscribed   int        `json:"subscribed,omitempty"`
	LastNs       int64      `json:"last_ns,omitempty"`
	Missing      int64      `json:"missing,omitempty"`
	Duplicates   int64      `json:"dup,omitempty"`
	OutOfOrder   int64      `json:"order,omitempty"`
	Disconnected int        `json:"disconnected,omitempty"`
	Hist         [][2]int64 `json:"hist,omitempty"` // bucket, count
	MaxNs        int64      `json:"max_ns,omitempty"`
	Err          string     `json:"err,omitempty"`
}

// runChild is the subscriber process of one instance.
func runChild(c config) {
	log.SetPrefix(fmt.Sprintf("child %s: ", c.childAddr))
	st := &state{}
	start := time.Now()
	conns, errs := dialAll(c, c.childAddr, st)
	out := json.NewEncoder(os.Stdout) // unbuffered: one write per line
	_ = out.Encode(childReply{Connected: len(conns), DialErrors: errs, DialSeconds: time.Since(start).Seconds()})
	defer func() {
		for _, cn := range conns {
			cn.close()
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() { // EOF: the parent is done or gone
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		n, _ := strconv.ParseInt(arg, 10, 64)
		var r childReply
		switch cmd {
		case "reset":
			st.reset(n, conns)
		case "count":
			r.Delivered = st.delivered.Load()
		case "subs":
			for _, cn := range conns {
				cn.mu.Lock()
				if cn.got > 0 {
					r.Subscribed++
				}
				cn.mu.Unlock()
			}
		case "report":
			var h histogram
			for _, cn := range conns {
				cn.mu.Lock()
				if cn.got > 0 {
					r.Subscribed++
				}
				if ns := cn.last.UnixNano(); cn.got > 0 && ns > r.LastNs {
					r.LastNs = ns
				}
				r.Missing += max(n-int64(cn.got), 0)
				r.Frames += int64(cn.frames)
				r.Duplicates += int64(cn.dup)
				r.OutOfOrder += int64(cn.disorder)
				h.merge(&cn.hist)
				cn.mu.Unlock()
				if cn.closed.Load() {
					r.Disconnected++
				}
			}
			r.Delivered = st.delivered.Load()
			for i, v := range h.counts {
				if v > 0 {
					r.Hist = append(r.Hist, [2]int64{int64(i), int64(v)})
				}
			}
			r.MaxNs = h.maxNs
		default:
			r.Err = "unknown command " + cmd
		}
		if err := out.Encode(r); err != nil {
			return
		}
	}
}

// child is the parent's handle on a subscriber process.
type child struct {
	cmd   *exec.Cmd
	stdin *os.File
	out   *bufio.Reader
	hello childReply
}

func startChild(c config, addr string, srcBase int) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-child", "-addr", addr, "-conns", strconv.Itoa(c.conns), "-transport", "ws",
		"-src-base", strconv.Itoa(srcBase), "-dial-concurrency", strconv.Itoa(c.dialConcurrency))
	cmd.Stderr = os.Stderr
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdin = pr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pr.Close()
	return &child{cmd: cmd, stdin: pw, out: bufio.NewReaderSize(stdout, 64<<10)}, nil
}

// readLine reads the child's next reply, waiting at most timeout.
func (ch *child) readLine(timeout time.Duration) (childReply, error) {
	type res struct {
		r   childReply
		err error
	}
	done := make(chan res, 1)
	go func() {
		line, err := ch.out.ReadBytes('\n')
		var r childReply
		if err == nil {
			err = json.Unmarshal(line, &r)
		}
		if err == nil && r.Err != "" {
			err = errors.New(r.Err)
		}
		done <- res{r, err}
	}()
	select {
	case x := <-done:
		return x.r, x.err
	case <-time.After(timeout):
		// The reader goroutine is left behind; the run is abandoned.
		return childReply{}, fmt.Errorf("child pid %d: no reply in %v", ch.cmd.Process.Pid, timeout)
	}
}

func (ch *child) call(cmd string) (childReply, error) {
	if _, err := fmt.Fprintln(ch.stdin, cmd); err != nil {
		return childReply{}, err
	}
	return ch.readLine(30 * time.Second)
}

func (ch *child) stop() {
	ch.stdin.Close() // the child closes its connections and exits
	done := make(chan struct{})
	go func() { _ = ch.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = ch.cmd.Process.Kill()
		<-done
	}
}

// clusterResult is one cluster-mode run: the JSON line and a table row.
type clusterResult struct {
	Workload             string    `json:"workload"`
	Impl                 string    `json:"impl"`
	Transport            string    `json:"transport"`
	Instances            int       `json:"instances"`
	ConnsPerInstance     int       `json:"conns_per_instance"`
	Connected            []int     `json:"connected"` // per instance
	DialErrors           int       `json:"dial_errors"`
	DialSeconds          float64   `json:"dial_s"`  // all children, in parallel
	MeshSeconds          float64   `json:"mesh_s"`  // servers started → full mesh of routes
	ReadySeconds         float64   `json:"ready_s"` // dialed → every connection has a probe from instance 0
	Probes               int       `json:"probes"`
	Subscribed           []int     `json:"subscribed"` // per instance: connections that received a probe
	BaseRSSMB            []float64 `json:"base_rss_mb"`
	IdleRSSMB            []float64 `json:"idle_rss_mb"`
	RSSPerConnKiB        []float64 `json:"rss_per_conn_kib"`
	PeakRSSMB            []float64 `json:"peak_rss_mb"`
	Published            int       `json:"published"` // measured messages, all on instance 0
	ExpectedPerBurst     int64     `json:"expected_per_burst"`
	Expected             int64     `json:"expected"`
	Delivered            int64     `json:"delivered"`
	Missing              int64     `json:"missing"`
	Duplicates           int64     `json:"duplicates"`
	OutOfOrder           int64     `json:"out_of_order"`
	Loss                 float64   `json:"loss"` // missing / expected
	Disconnected         int       `json:"disconnected"`
	BurstRates           []float64 `json:"burst_deliveries_per_s"`
	DeliveriesPerS       float64   `json:"deliveries_per_s"`   // median burst
	CPUPerMillion        float64   `json:"cpu_s_per_1m"`       // all servers
	LoadCPUPerMillion    float64   `json:"load_cpu_s_per_1m"`  // all subscriber processes
	MessagesPerFrame     float64   `json:"messages_per_frame"` // batching: deliveries / WebSocket frames carrying them
	P50ms                float64   `json:"p50_ms"`
	P90ms                float64   `json:"p90_ms"`
	P99ms                float64   `json:"p99_ms"`
	Maxms                float64   `json:"max_ms"`
	InstanceP50ms        []float64 `json:"instance_p50_ms"`
	InstanceP99ms        []float64 `json:"instance_p99_ms"`
	InstanceMsgsPerFrame []float64 `json:"instance_messages_per_frame"`
	InstanceLastS        []float64 `json:"instance_last_receipt_s"` // median over bursts: burst start → last receipt on that instance
	Error                string    `json:"error,omitempty"`
}

func runClusters(c config) {
	var results []clusterResult
	src := 10 // children dial from 127.0.0.10 and up, one address per 20k connections each
	for _, f := range strings.Split(c.instances, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			log.Fatalf("-instances: %q is not a positive count", f)
		}
		r, err := runCluster(c, k, src)
		src += k * ((c.conns + 19999) / 20000)
		if src > 250 {
			src = 10
		}
		if err != nil {
			log.Printf("%d instances: %v", k, err)
			r.Error = err.Error()
		}
		results = append(results, r)
		if c.jsonOut != "" {
			if f, err := os.OpenFile(c.jsonOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				_ = json.NewEncoder(f).Encode(r)
				f.Close()
			}
		}
	}
	printClusterTable(c, results)
}

// freePorts returns n distinct free loopback ports (free when returned).
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

type serverProc struct {
	cmd     *exec.Cmd
	base    string // http://addr
	addr    string
	monitor int
}

// runCluster measures k roomcast instances. With k = 1 the instance is a
// plain broker (embedded in-process NATS, no listener, no routes): the
// single-instance baseline.
func runCluster(c config, k, srcBase int) (clusterResult, error) {
	r := clusterResult{Workload: c.label, Impl: "roomcast", Transport: "ws", Instances: k, ConnsPerInstance: c.conns}
	ports, err := freePorts(2 * k)
	if err != nil {
		return r, err
	}
	routePorts, monPorts := ports[:k], ports[k:]
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
	}

	// Servers.
	t0 := time.Now()
	servers := make([]*serverProc, k)
	defer func() {
		for _, s := range servers {
			if s != nil {
				_ = s.cmd.Process.Kill()
				_ = s.cmd.Wait()
			}
		}
	}()
	for i := range k {
		args := []string{"-impl", "roomcast"}
		if k > 1 {
			args = append(args, "-name", "node"+strconv.Itoa(i), "-cluster-port", strconv.Itoa(routePorts[i]),
				"-routes", strings.Join(routes, ","), "-monitor-port", strconv.Itoa(monPorts[i]))
		}
		cmd := exec.Command(c.server, args...)
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return r, err
		}
		servers[i] = &serverProc{cmd: cmd, monitor: monPorts[i]}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			return r, fmt.Errorf("server %d did not start: %v", i, err)
		}
		servers[i].addr = strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		servers[i].base = "http://" + servers[i].addr
	}
	if k > 1 {
		if !waitFor(func() bool {
			for _, s := range servers {
				if remoteNodes(s.monitor) < k-1 {
					return false
				}
			}
			return true
		}, 30*time.Second) {
			return r, errors.New("no full mesh of routes in 30s")
		}
	}
	r.MeshSeconds = time.Since(t0).Seconds()
	for _, s := range servers {
		control(s.base + "/control/gc")
	}
	time.Sleep(200 * time.Millisecond)
	for _, s := range servers {
		control(s.base + "/control/gc")
		r.BaseRSSMB = append(r.BaseRSSMB, float64(rssKiB(s.cmd.Process.Pid))/1024)
	}

	// Subscriber processes, dialing in parallel.
	children := make([]*child, k)
	defer func() {
		var wg sync.WaitGroup
		for _, ch := range children {
			if ch != nil {
				wg.Go(ch.stop)
			}
		}
		wg.Wait()
	}()
	t0 = time.Now()
	for i, s := range servers {
		ch, err := startChild(c, s.addr, srcBase+i*((c.conns+19999)/20000))
		if err != nil {
			return r, err
		}
		children[i] = ch
	}
	total := 0
	for i, ch := range children {
		h, err := ch.readLine(5 * time.Minute)
		if err != nil {
			return r, fmt.Errorf("child %d: %v", i, err)
		}
		ch.hello = h
		r.Connected = append(r.Connected, h.Connected)
		r.DialErrors += h.DialErrors
		total += h.Connected
	}
	r.DialSeconds = time.Since(t0).Seconds()
	if total == 0 {
		return r, errors.New("no connection")
	}

	// Probes on instance 0 until every connection has one.
	t0 = time.Now()
	if err := resetAll(children, 0); err != nil {
		return r, err
	}
	ready := false
	for !ready && time.Since(t0) < 60*time.Second {
		r.Probes++
		trigger(c, servers[0].base, 0, 1, 1)
		waitFor(func() bool {
			r.Subscribed = r.Subscribed[:0]
			ready = true
			for i, ch := range children {
				rep, err := ch.call("subs")
				if err != nil {
					return false
				}
				r.Subscribed = append(r.Subscribed, rep.Subscribed)
				ready = ready && rep.Subscribed >= r.Connected[i]
			}
			return ready
		}, 2*time.Second, 50*time.Millisecond)
	}
	r.ReadySeconds = time.Since(t0).Seconds()
	if !ready {
		log.Printf("%d instances: after %d probes in %.0fs only %v of %v connections have one; measuring anyway",
			k, r.Probes, r.ReadySeconds, r.Subscribed, r.Connected)
	}

	time.Sleep(300 * time.Millisecond)
	for _, s := range servers {
		control(s.base + "/control/gc")
	}
	time.Sleep(200 * time.Millisecond)
	for i, s := range servers {
		control(s.base + "/control/gc")
		idle := float64(rssKiB(s.cmd.Process.Pid)) / 1024
		r.IdleRSSMB = append(r.IdleRSSMB, idle)
		r.RSSPerConnKiB = append(r.RSSPerConnKiB, (idle-r.BaseRSSMB[i])*1024/float64(max(r.Connected[i], 1)))
	}
	r.PeakRSSMB = make([]float64, k)

	// Bursts, all published on instance 0.
	perConn := int64(c.n)
	r.ExpectedPerBurst = perConn * int64(total)
	var hist histogram
	inst := make([]histogram, k)
	var cpuTotal, loadCPU float64
	var frames int64
	instFrames, instGot := make([]int64, k), make([]int64, k)
	instLast := make([][]float64, k)
	if c.cpuProfile != "" { // 5 s of each server, from the first burst on
		for i, s := range servers {
			go func() {
				resp, err := http.Get(s.base + "/debug/pprof/profile?seconds=5")
				if err != nil {
					log.Print(err)
					return
				}
				defer resp.Body.Close()
				f, _ := os.Create(fmt.Sprintf("%s.%dinst.%d", c.cpuProfile, k, i))
				_, _ = io.Copy(f, resp.Body)
				f.Close()
			}()
		}
	}
	for b := 1; b <= c.bursts; b++ {
		if err := resetAll(children, b); err != nil {
			return r, err
		}
		cpu0, load0 := 0.0, 0.0
		for i, s := range servers {
			cpu0 += cpuSeconds(s.cmd.Process.Pid)
			load0 += cpuSeconds(children[i].cmd.Process.Pid)
		}
		start := time.Now()
		done := make(chan struct{})
		go func() { trigger(c, servers[0].base, b, 1, c.n); close(done) }()
		waitFor(func() bool {
			var got int64
			for _, ch := range children {
				rep, err := ch.call("count")
				if err != nil {
					return true
				}
				got += rep.Delivered
			}
			return got >= r.ExpectedPerBurst
		}, c.timeout, 10*time.Millisecond)
		<-done
		for i, s := range servers {
			cpuTotal += cpuSeconds(s.cmd.Process.Pid)
			loadCPU += cpuSeconds(children[i].cmd.Process.Pid)
		}
		cpuTotal -= cpu0
		loadCPU -= load0
		last := start.UnixNano()
		var got int64
		for i, ch := range children {
			rep, err := ch.call("report " + strconv.FormatInt(perConn, 10))
			if err != nil {
				return r, fmt.Errorf("child %d: %v", i, err)
			}
			got += rep.Delivered
			frames += rep.Frames
			instFrames[i] += rep.Frames
			instGot[i] += rep.Delivered
			if rep.LastNs > 0 {
				instLast[i] = append(instLast[i], time.Duration(rep.LastNs-start.UnixNano()).Seconds())
			}
			last = max(last, rep.LastNs)
			r.Missing += rep.Missing
			r.Duplicates += rep.Duplicates
			r.OutOfOrder += rep.OutOfOrder
			var h histogram
			for _, bc := range rep.Hist {
				h.counts[bc[0]] += uint32(bc[1])
			}
			h.maxNs = rep.MaxNs
			hist.merge(&h)
			inst[i].merge(&h)
		}
		r.Delivered += got
		r.Published += c.n
		if d := time.Duration(last - start.UnixNano()); d > 0 {
			r.BurstRates = append(r.BurstRates, float64(got)/d.Seconds())
		}
		for i, s := range servers {
			r.PeakRSSMB[i] = max(r.PeakRSSMB[i], float64(rssKiB(s.cmd.Process.Pid))/1024)
		}
		time.Sleep(c.pause)
	}
	for i, ch := range children {
		rep, err := ch.call("report 0")
		if err != nil {
			return r, fmt.Errorf("child %d: %v", i, err)
		}
		r.Disconnected += rep.Disconnected
	}
	r.Expected = r.ExpectedPerBurst * int64(c.bursts)
	if r.Expected > 0 {
		r.Loss = float64(r.Missing) / float64(r.Expected)
	}
	r.DeliveriesPerS = median(r.BurstRates)
	if r.Delivered > 0 {
		r.CPUPerMillion = cpuTotal / float64(r.Delivered) * 1e6
		r.LoadCPUPerMillion = loadCPU / float64(r.Delivered) * 1e6
	}
	if frames > 0 {
		r.MessagesPerFrame = float64(r.Delivered) / float64(frames)
	}
	r.P50ms, r.P90ms, r.P99ms, r.Maxms = hist.quantile(0.50), hist.quantile(0.90), hist.quantile(0.99), hist.max()
	for i := range inst {
		r.InstanceP50ms = append(r.InstanceP50ms, inst[i].quantile(0.50))
		r.InstanceP99ms = append(r.InstanceP99ms, inst[i].quantile(0.99))
		r.InstanceMsgsPerFrame = append(r.InstanceMsgsPerFrame, float64(instGot[i])/float64(max(instFrames[i], 1)))
		r.InstanceLastS = append(r.InstanceLastS, median(instLast[i]))
	}
	return r, nil
}

func resetAll(children []*child, burst int) error {
	for i, ch := range children {
		if _, err := ch.call("reset " + strconv.Itoa(burst)); err != nil {
			return fmt.Errorf("child %d: %v", i, err)
		}
	}
	return nil
}

// remoteNodes counts the distinct other nodes a server has routes to
// (nats-server pools several route connections per node).
func remoteNodes(monitor int) int {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(monitor) + "/routez")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var rz struct {
		Routes []struct {
			RemoteID string `json:"remote_id"`
		} `json:"routes"`
	}
	if json.NewDecoder(resp.Body).Decode(&rz) != nil {
		return 0
	}
	ids := map[string]bool{}
	for _, rt := range rz.Routes {
		ids[rt.RemoteID] = true
	}
	return len(ids)
}

func printClusterTable(c config, rs []clusterResult) {
	fmt.Printf("\n%s: roomcast cluster, %d ws subscribers per instance in one room, each instance and its subscribers in their own processes; "+
		"%d bursts of %d × %d B published on instance 0\n", c.label, c.conns, c.bursts, c.n, c.size)
	fmt.Printf("%-3s %-5s %7s %6s %7s %15s %12s %8s %8s %8s %8s %8s %8s %8s %7s %5s %5s %6s\n",
		"run", "inst", "conns", "dial s", "ready s", "delivered", "deliveries/s", "CPU/1M", "load/1M", "msg/frm", "p50 ms", "p90 ms", "p99 ms", "max ms", "missing", "dup", "order", "closed")
	for run, r := range rs {
		conns := 0
		for _, n := range r.Connected {
			conns += n
		}
		fmt.Printf("%-3d %-5d %7d %6.2f %7.2f %15s %12.0f %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.1f %7d %5d %5d %6d\n",
			run+1, r.Instances, conns, r.DialSeconds, r.ReadySeconds, fmt.Sprintf("%d/%d", r.Delivered, r.Expected),
			r.DeliveriesPerS, r.CPUPerMillion, r.LoadCPUPerMillion, r.MessagesPerFrame, r.P50ms, r.P90ms, r.P99ms, r.Maxms, r.Missing, r.Duplicates, r.OutOfOrder, r.Disconnected)
		for i := range r.Connected {
			fmt.Printf("          instance %d: %d connected, %d got a probe, RSS %.1f MB base, %.1f MB idle (%.1f KiB/conn), %.1f MB peak",
				i, r.Connected[i], at(r.Subscribed, i), at(r.BaseRSSMB, i), at(r.IdleRSSMB, i), at(r.RSSPerConnKiB, i), at(r.PeakRSSMB, i))
			if i < len(r.InstanceP50ms) {
				fmt.Printf(", p50/p99 %.2f/%.2f ms, %.2f msgs/frame, last receipt at %.2f s",
					r.InstanceP50ms[i], r.InstanceP99ms[i], r.InstanceMsgsPerFrame[i], r.InstanceLastS[i])
			}
			fmt.Println()
		}
		if r.Error != "" {
			fmt.Printf("          error: %s\n", r.Error)
		}
	}
	// Each run against the last single-instance run before it (-instances 1,3,1,3 pairs them).
	var ref *clusterResult
	header := false
	for i := range rs {
		r := &rs[i]
		if r.Instances == 1 {
			ref = r
			continue
		}
		if ref == nil || r.Error != "" || ref.Error != "" || ref.DeliveriesPerS == 0 || ref.CPUPerMillion == 0 || ref.P50ms == 0 || ref.P99ms == 0 {
			continue
		}
		if !header {
			fmt.Println("ratios against the single instance run just before (deliveries/s ×, CPU per 1M ×, p50 ×, p99 ×):")
			header = true
		}
		fmt.Printf("  run %d, %d instances: %5.2f× %5.2f× %5.2f× %5.2f×\n", i+1, r.Instances, r.DeliveriesPerS/ref.DeliveriesPerS,
			r.CPUPerMillion/ref.CPUPerMillion, r.P50ms/ref.P50ms, r.P99ms/ref.P99ms)
	}
}

func at[T int | float64](v []T, i int) T {
	if i < len(v) {
		return v[i]
	}
	return 0
}
