// Paced mode (-paced): latency at an equal, fixed offered load.
//
// A burst measures throughput, but its latency depends on where each
// implementation keeps the queue: a publisher that blocks (the gorilla hub's
// channel) queues in the caller and stamps each message late, one that
// returns at once (roomcast) queues inside and stamps them all at the start.
// Paced mode offers the same load to every implementation instead: the
// server's /control/paced publishes R messages/s in all, round-robin over
// the -rooms rooms, each message stamped with its due time (start + i/R), so
// any queue, in the caller or inside, counts as latency.
//
// For each implementation: one server, one set of subscribers (dialed and
// warmed up once), then the ladder of -rates, each offered for -duration,
// -settle apart. After each rate the driver waits for every delivery (at
// most -timeout, or until nothing arrives for 5 s), then reports achieved
// deliveries/s, latency quantiles, loss, duplicates and order, server and
// load-generator CPU per 1M deliveries and the publisher's late sends. It
// stops climbing an implementation's ladder once p99 exceeds -stop-p99 or
// any message is lost or any connection closed (saturated), or its publisher
// falls more than -abort-late behind schedule (a publish that blocks), and
// reports the highest rate with p99 under -good-p99 and no loss.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pacedResult is one (implementation, rate) point, one JSON line.
type pacedResult struct {
	Mode          string  `json:"mode"` // "paced"
	Workload      string  `json:"workload"`
	Impl          string  `json:"impl"`
	Transport     string  `json:"transport"`
	Target        string  `json:"target"`
	Conns         int     `json:"conns"`
	Connected     int     `json:"connected"`
	Rooms         int     `json:"rooms"` // targets: rooms, or users with -target user
	Size          int     `json:"size"`
	RSSPerConnKiB float64 `json:"rss_per_conn_kib"`
	Rate          float64 `json:"rate"` // offered, messages/s over all targets
	DurationS     float64 `json:"duration_s"`
	// The publisher's account (server side).
	Sent      int     `json:"sent"`
	LateSends int     `json:"late_sends"` // sent more than 1 ms after their due time
	MaxLateMs float64 `json:"max_late_ms"`
	PublishS  float64 `json:"publish_s"`         // start to last send returned
	Aborted   bool    `json:"publisher_aborted"` // stopped over -abort-late behind; sent < rate×duration
	// The subscribers' account.
	Expected       int64   `json:"expected"`
	Delivered      int64   `json:"delivered"`
	OfferedPerS    float64 `json:"offered_deliveries_per_s"` // expected / (sent / rate)
	DeliveriesPerS float64 `json:"deliveries_per_s"`         // delivered / (last receipt - start)
	LastS          float64 `json:"last_receipt_s"`           // last receipt, from the start
	MsgsPerFrame   float64 `json:"messages_per_frame"`       // deliveries per frame (SSE: per read) with one of them
	P50ms          float64 `json:"p50_ms"`
	P90ms          float64 `json:"p90_ms"`
	P99ms          float64 `json:"p99_ms"`
	Maxms          float64 `json:"max_ms"`
	Missing        int64   `json:"missing"`
	Duplicates     int64   `json:"duplicates"`
	OutOfOrder     int64   `json:"out_of_order"`
	Disconnected   int     `json:"disconnected"` // closed during this rate
	CPUPerMillion  float64 `json:"cpu_s_per_1m"`
	LoadCPUPerM    float64 `json:"load_cpu_s_per_1m"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	Saturated      bool    `json:"saturated"`      // loss or closed connections
	Stop           string  `json:"stop,omitempty"` // why the ladder stopped after this point
	Error          string  `json:"error,omitempty"`
}

// pacedReply is the server's answer to /control/paced (server/main.go).
type pacedReply struct {
	Sent     int     `json:"sent"`
	Late     int     `json:"late"`
	MaxLate  float64 `json:"max_late_ms"`
	StartNs  int64   `json:"start_ns"`
	ElapsedS float64 `json:"elapsed_s"`
	Aborted  bool    `json:"aborted"`
}

func runPaced(c config) {
	var all []pacedResult
	for _, im := range c.impls {
		rs, err := pacedLadder(c, im)
		if err != nil {
			log.Printf("%s: %v", im, err)
		}
		all = append(all, rs...)
	}
	printPacedTable(c, all)
}

// pacedLadder runs the whole ladder on one server and one set of subscribers.
func pacedLadder(c config, impl string) ([]pacedResult, error) {
	var setup result
	s, err := startSession(c, impl, &setup)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if setup.Subscribed < setup.Connected {
		log.Printf("%s: only %d of %d connections got the warm-up message", impl, setup.Subscribed, setup.Connected)
	}
	log.Printf("%s: %d connected in %.2f s (%d dial errors), %.1f KiB/conn idle", impl, setup.Connected, setup.DialSeconds, setup.DialErrors, setup.RSSPerConnKiB)
	var rs []pacedResult
	for i, rate := range c.rates {
		if i > 0 {
			time.Sleep(c.settle)
		}
		r := pacedPoint(c, s, impl, i+1, rate)
		r.RSSPerConnKiB = setup.RSSPerConnKiB
		switch {
		case r.Error != "":
			r.Stop = "error"
		case r.Saturated:
			r.Stop = "loss"
		case r.Aborted:
			r.Stop = "publisher over " + c.abortLate.String() + " behind"
		case r.P99ms > float64(c.stopP99)/1e6:
			r.Stop = "p99 > " + c.stopP99.String()
		}
		if r.Stop == "" && i == len(c.rates)-1 {
			r.Stop = "ladder top"
		}
		stop := ""
		if r.Stop != "" && r.Stop != "ladder top" {
			stop = ", stop: " + r.Stop
		}
		log.Printf("%s: %.0f msg/s: %.0f deliveries/s of %.0f offered, p50/p99/max %.2f/%.2f/%.1f ms, missing %d dup %d order %d closed %d, %d late sends (max %.1f ms)%s",
			impl, rate, r.DeliveriesPerS, r.OfferedPerS, r.P50ms, r.P99ms, r.Maxms, r.Missing, r.Duplicates, r.OutOfOrder, r.Disconnected, r.LateSends, r.MaxLateMs, stop)
		rs = append(rs, r)
		if c.jsonOut != "" {
			if f, err := os.OpenFile(c.jsonOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				_ = json.NewEncoder(f).Encode(r)
				f.Close()
			}
		}
		if r.Stop != "" {
			break
		}
	}
	return rs, nil
}

// pacedPoint offers one rate for c.duration and measures it; burst numbers
// the rate in the payloads (the warm-up is burst 0), so late copies of an
// earlier rate are not counted.
func pacedPoint(c config, s *session, impl string, burst int, rate float64) pacedResult {
	r := pacedResult{Mode: "paced", Workload: c.label, Impl: impl, Transport: c.transport, Target: c.target,
		Conns: c.conns, Connected: len(s.conns), Rooms: s.targets, Size: c.size, Rate: rate, DurationS: c.duration.Seconds()}
	st, conns := s.st, s.conns
	closedBefore := 0
	for _, cn := range conns {
		if cn.closed.Load() {
			closedBefore++
		}
	}
	st.reset(int64(burst), conns)

	// Peak RSS, sampled while the rate runs.
	stopRSS := make(chan struct{})
	var rssWG sync.WaitGroup
	rssWG.Add(1)
	go func() {
		defer rssWG.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			r.PeakRSSMB = max(r.PeakRSSMB, float64(rssKiB(s.pid))/1024)
			select {
			case <-stopRSS:
				return
			case <-t.C:
			}
		}
	}()

	cpu0, load0 := cpuSeconds(s.pid), cpuSeconds(os.Getpid())
	path, prefix := "/control/paced", "r"
	if c.target == "user" {
		path, prefix = "/control/paced-user", "u"
	}
	q := url.Values{"prefix": {prefix}, "targets": {strconv.Itoa(s.targets)}, "rate": {strconv.FormatFloat(rate, 'f', -1, 64)},
		"duration": {c.duration.String()}, "size": {strconv.Itoa(c.size)}, "burst": {strconv.Itoa(burst)}, "abort": {c.abortLate.String()}}
	rep, err := pacedTrigger(s.base + path + "?" + q.Encode())
	if err != nil {
		close(stopRSS)
		rssWG.Wait()
		r.Error = err.Error()
		return r
	}
	r.Sent, r.LateSends, r.MaxLateMs, r.PublishS, r.Aborted = rep.Sent, rep.Late, rep.MaxLate, rep.ElapsedS, rep.Aborted

	// Each subscriber expects the messages to its target: message i went to
	// target i%targets, so sent/targets each, one more for the first sent%targets.
	perTarget := func(t int) int64 {
		n := int64(rep.Sent / s.targets)
		if t < rep.Sent%s.targets {
			n++
		}
		return n
	}
	for _, cn := range conns {
		r.Expected += perTarget(cn.target)
	}
	if r.Sent > 0 { // over the part of the schedule that was sent (all of it unless aborted)
		r.OfferedPerS = float64(r.Expected) / (float64(r.Sent) / rate)
	}

	// Drain: until every copy is in, nothing has arrived for 5 s, or c.timeout.
	const quiet = 5 * time.Second
	deadline := time.Now().Add(c.timeout)
	last, lastChange := st.delivered.Load(), time.Now()
	for st.delivered.Load() < r.Expected {
		now := time.Now()
		if d := st.delivered.Load(); d != last {
			last, lastChange = d, now
		}
		if now.After(deadline) || now.Sub(lastChange) > quiet {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.CPUPerMillion = cpuSeconds(s.pid) - cpu0 // seconds, per 1M below
	r.LoadCPUPerM = cpuSeconds(os.Getpid()) - load0
	close(stopRSS)
	rssWG.Wait()

	start := time.Unix(0, rep.StartNs)
	lastRecv := start
	var hist histogram
	var frames int64
	for _, cn := range conns {
		cn.mu.Lock()
		if cn.got > 0 && cn.last.After(lastRecv) {
			lastRecv = cn.last
		}
		hist.merge(&cn.hist)
		r.Delivered += int64(cn.got)
		frames += int64(cn.frames)
		r.Missing += max(perTarget(cn.target)-int64(cn.got), 0)
		r.Duplicates += int64(cn.dup)
		r.OutOfOrder += int64(cn.disorder)
		cn.mu.Unlock()
		if cn.closed.Load() {
			r.Disconnected++
		}
	}
	r.Disconnected -= closedBefore
	r.LastS = lastRecv.Sub(start).Seconds()
	if r.LastS > 0 {
		r.DeliveriesPerS = float64(r.Delivered) / r.LastS
	}
	if r.Delivered > 0 {
		r.CPUPerMillion = r.CPUPerMillion / float64(r.Delivered) * 1e6
		r.LoadCPUPerM = r.LoadCPUPerM / float64(r.Delivered) * 1e6
	} else {
		r.CPUPerMillion, r.LoadCPUPerM = 0, 0
	}
	if frames > 0 {
		r.MsgsPerFrame = float64(r.Delivered) / float64(frames)
	}
	r.P50ms, r.P90ms, r.P99ms, r.Maxms = hist.quantile(0.50), hist.quantile(0.90), hist.quantile(0.99), hist.max()
	r.Saturated = r.Missing > 0 || r.Disconnected > 0
	return r
}

// pacedTrigger calls the paced endpoint, which answers when it has sent the
// last message (after the rate's duration).
func pacedTrigger(u string) (pacedReply, error) {
	var rep pacedReply
	resp, err := http.Get(u)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, fmt.Errorf("paced reply %q: %v", body, err)
	}
	return rep, nil
}

func printPacedTable(c config, rs []pacedResult) {
	targets := "rooms"
	if c.target == "user" {
		targets = "users"
	}
	nt := c.rooms
	if c.target == "user" {
		nt = c.users
	}
	fmt.Printf("\n%s (paced): %d %s subscribers, %d %s, %d B messages, rates %s messages/s (all %s together), %v each, %v apart; "+
		"stop at p99 > %v or any loss\n", c.label, c.conns, c.transport, nt, targets, c.size, joinRates(c.rates), targets, c.duration, c.settle, c.stopP99)
	fmt.Printf("%-10s %7s %12s %12s %8s %8s %8s %8s %7s %5s %5s %6s %8s %8s %6s %6s %8s  %s\n",
		"impl", "msg/s", "offered d/s", "achieved d/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "missing", "dup", "order", "closed",
		"CPU/1M", "load/1M", "msg/fr", "late", "late ms", "stop")
	for _, r := range rs {
		fmt.Printf("%-10s %7.0f %12.0f %12.0f %8.2f %8.2f %8.2f %8.1f %7d %5d %5d %6d %8.2f %8.2f %6.2f %6d %8.1f  %s\n",
			r.Impl, r.Rate, r.OfferedPerS, r.DeliveriesPerS, r.P50ms, r.P90ms, r.P99ms, r.Maxms, r.Missing, r.Duplicates, r.OutOfOrder,
			r.Disconnected, r.CPUPerMillion, r.LoadCPUPerM, r.MsgsPerFrame, r.LateSends, r.MaxLateMs, r.Stop+r.Error)
	}
	fmt.Println("(d/s: deliveries/s; CPU/1M, load/1M: server and load-generator CPU seconds per 1M deliveries; msg/fr: messages " +
		"per frame; late: sends more than 1 ms past their due time, late ms: the largest lateness)")
	var behind []string
	for _, r := range rs {
		if r.Sent > 0 && float64(r.LateSends) > 0.01*float64(r.Sent) {
			behind = append(behind, fmt.Sprintf("%s at %.0f/s (%.1f%% late, max %.1f ms)", r.Impl, r.Rate, 100*float64(r.LateSends)/float64(r.Sent), r.MaxLateMs))
		}
	}
	if len(behind) > 0 {
		fmt.Printf("publisher behind schedule (over 1%% of sends more than 1 ms late; their delay counts as latency): %s\n", strings.Join(behind, ", "))
	}
	fmt.Printf("highest rate with p99 < %v and no loss:\n", c.good)
	for _, im := range c.impls {
		best, top, ran := -1, false, false
		for i, r := range rs {
			if r.Impl != im {
				continue
			}
			ran = true
			if r.Error == "" && !r.Saturated && !r.Aborted && r.P99ms < float64(c.good)/1e6 && (best < 0 || r.Rate > rs[best].Rate) {
				best, top = i, r.Stop == "ladder top"
			}
		}
		switch {
		case !ran:
			fmt.Printf("  %-10s not run\n", im)
		case best < 0:
			fmt.Printf("  %-10s none (below %.0f msg/s)\n", im, c.rates[0])
		default:
			b := rs[best]
			note := ""
			if top {
				note = " (the ladder's top rate: higher was not tried)"
			}
			fmt.Printf("  %-10s %.0f msg/s = %.0f deliveries/s, p99 %.2f ms%s\n", im, b.Rate, b.DeliveriesPerS, b.P99ms, note)
		}
	}
}

func joinRates(v []float64) string {
	s := make([]string, len(v))
	for i, r := range v {
		s[i] = strconv.FormatFloat(r, 'f', -1, 64)
	}
	return strings.Join(s, ",")
}
