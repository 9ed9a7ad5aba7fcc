//go:build linux || darwin

package pubsub_test

import (
	"bytes"
	"compress/flate"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
)

// What WithCompression costs and saves (BENCHMARKS.md, "What compression
// costs"):
//
//	go test -run '^$' -bench 'Compression(Fanout|Deflate)' -count 5 .
//	go test -run '^$' -bench 'CompressionMemory' -benchtime 1x -count 5 .
//
// The clients are rawWS (compression_test.go): they offer
// permessage-deflate as Chromium does, inflate what comes compressed,
// count the bytes of the frames the server sent, and cost little besides,
// so what is measured is mostly the server. They run in this process: CPU
// figures include their reading and inflating.

// BenchmarkCompressionFanout fans messages out to 100 WebSocket clients in
// one room, compression off and on (WithCompression(0): every message
// compressed). One op is one delivery. "paced": each message reaches every
// client before the next is published, so each delivery is a WebSocket
// message of its own (a chat, a ticker); "burst": published as fast as the
// clients read, so the broker joins queued frames into one message and
// compresses the joined message. Metrics: wire-B/delivery, the frame bytes
// the server sent; cpu-ns/delivery, the process's CPU time (server and
// clients); deliveries/message, the joining.
func BenchmarkCompressionFanout(b *testing.B) {
	for _, size := range []int{600, 64} {
		for _, mode := range []string{"paced", "burst"} {
			for _, on := range []bool{false, true} {
				name := fmt.Sprintf("%dB/%s/%s", size, mode, onOff(on))
				b.Run(name, func(b *testing.B) { benchFanout(b, size, mode == "paced", on) })
			}
		}
	}
}

func benchFanout(b *testing.B, size int, paced, on bool) {
	const clients = 100
	br, srv := benchBroker(b, on)
	cs := make([]*rawWS, clients)
	for i := range cs {
		c, err := dialRawErr(srv, "room=bench", chromiumOffer)
		if err != nil {
			b.Fatal(err)
		}
		defer c.nc.Close()
		if on != (c.ext != "") {
			b.Fatalf("extension %q", c.ext)
		}
		if err := c.awaitSubscribed(); err != nil {
			b.Fatal(err)
		}
		c.Wire = 0
		cs[i] = c
	}
	msgs := max(b.N/clients, 1)
	data := make([][]byte, msgs)
	for i := range data {
		data[i] = benchMessage(size, i)
	}
	var total, messages atomic.Int64 // deliveries and WebSocket messages received, all clients
	counts := make([]atomic.Int64, clients)
	signal := make(chan struct{}, 1)
	var target atomic.Int64 // total to signal at
	for i, c := range cs {
		go func() {
			for {
				p, _, err := c.next()
				if err != nil {
					return
				}
				n := int64(strings.Count(string(p), "\n") + 1)
				counts[i].Add(n)
				messages.Add(1)
				if total.Add(n) == target.Load() {
					signal <- struct{}{}
				}
			}
		}()
	}
	slowest := func() int64 {
		low := counts[0].Load()
		for i := range counts {
			low = min(low, counts[i].Load())
		}
		return low
	}
	if !paced {
		target.Store(int64(msgs * clients))
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for i, d := range data {
		if paced {
			target.Store(int64((i + 1) * clients))
		}
		for !paced && i%64 == 0 && int64(i-512) > slowest() { // within the send queues
			time.Sleep(50 * time.Microsecond)
		}
		if err := br.Publish(ctx, "bench", d); err != nil {
			b.Fatal(err)
		}
		if paced {
			awaitSignal(b, signal)
		}
	}
	if !paced {
		awaitSignal(b, signal)
	}
	cpu = cpuTime() - cpu
	b.StopTimer()
	deliveries := float64(msgs * clients)
	var wire int64
	for _, c := range cs {
		_ = c.nc.Close()
		wire += c.Wire // the reader wrote it before its last count: ordered by total
	}
	b.ReportMetric(float64(wire)/deliveries, "wire-B/delivery")
	b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
	b.ReportMetric(deliveries/float64(messages.Load()), "deliveries/message")
}

// BenchmarkCompressionDeflate is what the server does per compressed
// message, per connection, without sockets: coder/websocket's pooled
// flate writer (compress/flate, BestSpeed) reset, written, flushed. A
// fixed part (block and Huffman tables) dominates small messages.
func BenchmarkCompressionDeflate(b *testing.B) {
	for _, size := range []int{600, 64} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			frame := fmt.Appendf(nil, `{"type":"message","id":"cqo5ut0fpq3g-1","room":"bench","data":%s}`, benchMessage(size, 1))
			fw, _ := flate.NewWriter(nil, flate.BestSpeed)
			var out bytes.Buffer
			for b.Loop() {
				out.Reset()
				fw.Reset(&out)
				_, _ = fw.Write(frame)
				_ = fw.Flush()
			}
			b.ReportMetric(float64(len(frame)), "in-B")
			b.ReportMetric(float64(out.Len()-4), "out-B") // less the tail the sender drops
		})
	}
}

func awaitSignal(b *testing.B, signal chan struct{}) {
	select {
	case <-signal:
	case <-time.After(30 * time.Second):
		b.Fatal("deliveries missing after 30 s")
	}
}

// BenchmarkCompressionMemory is the server's memory per WebSocket
// connection, compression off and on, with 1,000 connections that all
// offered permessage-deflate: idle; after one ~600-byte message to all
// (compressed when on); after each client sent one frame (compressed when
// on, as browsers do). runtime.MemStats after two GCs (which also empty
// sync.Pools), over a baseline with the broker and no connection. The heap
// figures include the test clients' sockets (a few hundred bytes each,
// alike in both modes). Run with -benchtime 1x: one op is the whole
// measurement.
func BenchmarkCompressionMemory(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(onOff(on), func(b *testing.B) {
			for range b.N {
				benchMemory(b, on)
			}
		})
	}
}

func benchMemory(b *testing.B, on bool) {
	const n = 1000
	br, srv := benchBroker(b, on)
	before := memNow()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range n {
		c, err := dialRawErr(srv, "room=bench", chromiumOffer)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.awaitSubscribed(); err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c.nc) // the rest of rawWS goes: an idle client holds its socket only
	}
	idle := memNow()
	written := func(want int64) { // frames written since New, pongs and close frames included
		for deadline := time.Now().Add(30 * time.Second); br.Stats().WrittenFrames < want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("frames not written after 30 s")
			}
		}
	}
	frames := br.Stats().WrittenFrames
	if err := br.Publish(ctx, "bench", benchMessage(600, 1)); err != nil {
		b.Fatal(err)
	}
	written(frames + n)
	sent := memNow()
	for _, nc := range conns {
		c := &rawWS{nc: nc}
		if err := c.send([]byte(`{"type":"ping","ref":1}`), on); err != nil {
			b.Fatal(err)
		}
	}
	written(frames + 2*n) // the pongs
	read := memNow()
	per := func(m, base runtime.MemStats) float64 { return float64(int64(m.HeapInuse)-int64(base.HeapInuse)) / n }
	live := func(m, base runtime.MemStats) float64 { return float64(int64(m.HeapAlloc)-int64(base.HeapAlloc)) / n }
	b.ReportMetric(per(idle, before), "idle-heap-B/conn")
	b.ReportMetric(per(sent, before), "sent-heap-B/conn")
	b.ReportMetric(per(read, before), "read-heap-B/conn")
	b.ReportMetric(live(idle, before), "idle-live-B/conn")
	b.ReportMetric(live(sent, before), "sent-live-B/conn")
	b.ReportMetric(live(read, before), "read-live-B/conn")
	b.ReportMetric(float64(int64(read.StackInuse)-int64(before.StackInuse))/n, "stack-B/conn")
}

func benchBroker(b *testing.B, on bool) (*Broker, string) {
	opts := []Option{WithLogger(quietLogger()), WithKeepAlive(time.Hour, time.Minute)} // no pings meanwhile
	if on {
		opts = append(opts, WithCompression(0))
	}
	br, err := New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	mux := http.NewServeMux()
	mux.Handle("/live", br.Handler())
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	return br, srv.Listener.Addr().String()
}

// awaitSubscribed reads until the "subscribed" frame (it may have come
// with the welcome).
func (c *rawWS) awaitSubscribed() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(waitFor))
	defer c.nc.SetReadDeadline(time.Time{})
	for !c.subscribed {
		p, _, err := c.next()
		if err != nil {
			return err
		}
		c.subscribed = strings.Contains(string(p), `"type":"subscribed"`)
	}
	return nil
}

func memNow() runtime.MemStats {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// benchMessage is message i of about size bytes: at 600, a chat message
// as an app would publish it (ids, its author, a sentence, timestamps, a
// random nonce); at 64, a short one.
func benchMessage(size, i int) []byte {
	r := uint64(i)*0x9e3779b97f4a7c15 + 1 // per-message ids and nonce
	next := func() uint64 { r ^= r << 13; r ^= r >> 7; r ^= r << 17; return r }
	if size <= 64 {
		return fmt.Appendf(nil, `{"user":"u_%05d","text":"%-17.17s","ts":%d}`, next()%100000, benchShort[i%len(benchShort)], 1764511392000+i)
	}
	return fmt.Appendf(nil, `{"id":"msg_%016x","room":"team-platform","author":{"id":"u_%05d","name":%q,"avatar":"https://cdn.example.com/avatars/u_%05d/64.png","status":"online"},"text":%q,"sent_at":"2026-11-30T14:%02d:%02d.%03dZ","reply_to":"msg_%016x","mentions":["u_%05d"],"reactions":[{"emoji":"+1","count":%d},{"emoji":"eyes","count":%d}],"attachments":[],"thread_count":%d,"client_nonce":"%08x-%04x-4%03x-a%03x-%012x"}`,
		next(), i%97, benchNames[i%len(benchNames)], i%97, benchLong[i%len(benchLong)], i/60%60, i%60, i%1000, next(), next()%100000,
		i%7, i%3, i%11, next()%(1<<32), next()%(1<<16), next()%(1<<12), next()%(1<<12), next()%(1<<48))
}

var (
	benchNames = []string{"Ana Souza", "Bilal Rahman", "Chen Wei", "Dmitri Volkov", "Emma Lindqvist", "Fatima Zahra"}
	benchShort = []string{"ok, see you at 3", "on my way", "merged, thanks!", "lgtm", "brb coffee", "who has the keys?"}
	benchLong  = []string{
		"Deploy of the billing service to staging is done; the migration took four minutes and the error rate is flat. I'll promote to production after lunch unless someone objects here.",
		"Can someone review the retry change in the payments client? It backs off with jitter now and stops after five attempts, which should stop the thundering herd we saw on Tuesday.",
		"Reminder: the planning meeting moved to Thursday at 10:30 in the big room. Please add your items to the doc before then, especially anything that needs a decision from product.",
		"The flaky integration test was a timezone issue: the fixture used local time and CI runs in UTC. Fixed in the branch, it passed twenty runs in a row, merging once the pipeline is green.",
	}
)
