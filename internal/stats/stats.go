// Package stats holds the broker's counters: lock-free, updated where the
// work happens (once per message fanned out, once per socket write, never
// once per delivery), and read in one snapshot.
package stats

import (
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// Counter is a count that only grows.
type Counter struct{ v atomic.Int64 }

// Add adds n. A nil Counter counts nothing, so instrumentation that is
// switched off costs one branch.
func (c *Counter) Add(n int64) {
	if c != nil {
		c.v.Add(n)
	}
}

// Load returns the count.
func (c *Counter) Load() int64 {
	if c == nil {
		return 0
	}
	return c.v.Load()
}

// Gauge is a value that goes up and down.
type Gauge struct{ v atomic.Int64 }

func (g *Gauge) Add(n int64) {
	if g != nil {
		g.v.Add(n)
	}
}

func (g *Gauge) Load() int64 {
	if g == nil {
		return 0
	}
	return g.v.Load()
}

// Max keeps the largest value observed.
type Max struct{ v atomic.Int64 }

// Observe records n if it is the largest yet.
func (m *Max) Observe(n int64) {
	if m == nil {
		return
	}
	for {
		cur := m.v.Load()
		if n <= cur || m.v.CompareAndSwap(cur, n) {
			return
		}
	}
}

func (m *Max) Load() int64 {
	if m == nil {
		return 0
	}
	return m.v.Load()
}

// Histogram counts durations into fixed buckets.
type Histogram struct {
	bounds []time.Duration // upper bounds, increasing
	counts []atomic.Uint64 // one per bound, and one past the last
	sum    atomic.Int64    // nanoseconds
}

// NewHistogram returns a histogram with the given upper bounds.
func NewHistogram(bounds ...time.Duration) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	if h == nil {
		return
	}
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// Buckets is a histogram's snapshot: Counts[i] durations were at most
// Bounds[i] (and above the bound before); the last count is above every
// bound.
type Buckets struct {
	Bounds []time.Duration
	Counts []uint64
	Count  uint64
	Sum    time.Duration
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() Buckets {
	if h == nil {
		return Buckets{}
	}
	b := Buckets{Bounds: slices.Clone(h.bounds), Counts: make([]uint64, len(h.counts)), Sum: time.Duration(h.sum.Load())}
	for i := range h.counts {
		b.Counts[i] = h.counts[i].Load()
		b.Count += b.Counts[i]
	}
	return b
}

// Quantile estimates the q-quantile (0 < q < 1) from the buckets: the upper
// bound of the bucket it falls in (the last bound, past it).
func (b Buckets) Quantile(q float64) time.Duration {
	if b.Count == 0 {
		return 0
	}
	rank := uint64(q * float64(b.Count))
	var seen uint64
	for i, n := range b.Counts {
		seen += n
		if seen > rank {
			if i < len(b.Bounds) {
				return b.Bounds[i]
			}
			break
		}
	}
	return b.Bounds[len(b.Bounds)-1]
}

// DecimalBounds returns the 1-2.5-5 sequence of bounds from first
// (itself 1, 2.5 or 5 times a power of ten) up to and including last: round
// numbers that read well on a dashboard and print exactly in seconds.
func DecimalBounds(first, last time.Duration) []time.Duration {
	var out []time.Duration
	for d := first; d <= last; {
		out = append(out, d)
		if strconv.FormatInt(int64(d), 10)[0] == '1' {
			d = d * 5 / 2 // 1 → 2.5
		} else {
			d *= 2 // 2.5 → 5 → 10
		}
	}
	return out
}

// Set is every counter of one broker, shared by the engines that count.
// The zero value counts; a nil *Set counts nothing.
type Set struct {
	WebSocket, SSE                   Gauge   // open connections
	PublishedServer, PublishedClient Counter // messages published by Go code, by clients
	Deliveries                       Counter // frames queued on connections by the fan-out
	Writes, WrittenBytes             Counter // socket writes, and their bytes
	WrittenFrames                    Counter // client frames those writes carried
	QueueHighWater                   Max     // the most frames one queue held
	SlowConsumerCloses               Counter
	Denied                           [NumDenials]Counter
	Resumes, Replayed, Truncated     Counter
	DeliveryDelay                    *Histogram // from the dispatcher to the socket
	ResumeDuration                   *Histogram

	base time.Time // Now's zero, with its monotonic reading
}

// Denials: what a client was refused.
const (
	DeniedSubscribe = iota
	DeniedPublish
	DeniedHistory
	DeniedPresence
	DeniedOrigin        // a cross-origin request
	DeniedMisconfigured // the host's middleware hides the connection
	NumDenials
)

// DenialNames are the denials' names, in order.
var DenialNames = [NumDenials]string{"subscribe", "publish", "history", "presence", "origin", "misconfigured"}

// NewSet returns a set with its histograms.
func NewSet() *Set {
	return &Set{
		base: time.Now(),
		// 50 µs to 10 s: a write's wait, from the fast path to a burst
		// at twenty thousand connections.
		DeliveryDelay:  NewHistogram(DecimalBounds(50*time.Microsecond, 10*time.Second)...),
		ResumeDuration: NewHistogram(DecimalBounds(time.Millisecond, 100*time.Second)...),
	}
}

// Deny counts a denial; a nil set counts nothing.
func (s *Set) Deny(kind int) {
	if s != nil {
		s.Denied[kind].Add(1)
	}
}

// The events, each a no-op on a nil set.

// Delivered counts n frames queued by one fan-out.
func (s *Set) Delivered(n int) {
	if s != nil {
		s.Deliveries.Add(int64(n))
	}
}

// Published counts one publish, by a client or by Go code.
func (s *Set) Published(client bool) {
	if s == nil {
		return
	}
	if client {
		s.PublishedClient.Add(1)
	} else {
		s.PublishedServer.Add(1)
	}
}

// Now is the set's clock for Frame.Born: monotonic nanoseconds since the
// set was made, never 0, so that a step of the wall clock cannot make a
// delay negative.
func (s *Set) Now() int64 { return int64(time.Since(s.base)) + 1 }

// Wrote counts one socket write of frames frames and bytes bytes, whose
// oldest message frame was fanned out at born (Now's clock; 0: none).
func (s *Set) Wrote(bytes, frames int, born int64) {
	if s == nil {
		return
	}
	s.Writes.Add(1)
	s.WrittenBytes.Add(int64(bytes))
	s.WrittenFrames.Add(int64(frames))
	if born != 0 {
		s.DeliveryDelay.Observe(time.Duration(s.Now() - born))
	}
}

// Queued records a queue's depth when its writer took it.
func (s *Set) Queued(depth int) {
	if s != nil {
		s.QueueHighWater.Observe(int64(depth))
	}
}

// Connected counts a connection opening (delta 1) or closing (-1).
func (s *Set) Connected(websocket bool, delta int64) {
	if s == nil {
		return
	}
	if websocket {
		s.WebSocket.Add(delta)
	} else {
		s.SSE.Add(delta)
	}
}

// SlowConsumer counts a connection closed for falling behind.
func (s *Set) SlowConsumer() {
	if s != nil {
		s.SlowConsumerCloses.Add(1)
	}
}

// Resumed counts a resume that took d and replayed n messages.
func (s *Set) Resumed(d time.Duration, n int) {
	if s == nil {
		return
	}
	s.Resumes.Add(1)
	s.Replayed.Add(int64(n))
	s.ResumeDuration.Observe(d)
}

// TruncatedRoom counts a "truncated" notice.
func (s *Set) TruncatedRoom() {
	if s != nil {
		s.Truncated.Add(1)
	}
}

// Room is a room and its local members.
type Room struct {
	Name    string
	Members int
}
