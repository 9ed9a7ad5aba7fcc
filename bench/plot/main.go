// Command plot draws the benchmark harness's JSON lines (bench/load -json)
// as SVG, by hand, with no dependencies:
//
//		plot -in results/latest.jsonl -out results -paced-label paced -scale-prefix scale-
//
//	  - <paced-label>-p99.svg: p99 latency (log scale) against the offered
//	    rate, one line per implementation, from the paced runs (-paced, "mode":
//	    "paced") labelled -paced-label. A hollow marker is a point with loss or
//	    closed connections, where the implementation's ladder stopped.
//	  - <scale-prefix>deliveries.svg: deliveries/s (median burst) against the
//	    connection count, one line per implementation, from the ordinary (burst)
//	    runs whose label starts with -scale-prefix (scale-5000, scale-10000…).
//
// When a file holds the same point more than once (runs appended), the last
// line wins.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"log"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// rec is what the plots read of a line of bench/load's output (burst runs
// and paced points; the cluster's lines have other labels).
type rec struct {
	Mode           string  `json:"mode"` // "paced", or empty for a burst run
	Workload       string  `json:"workload"`
	Impl           string  `json:"impl"`
	Transport      string  `json:"transport"`
	Target         string  `json:"target"`
	Conns          int     `json:"conns"`
	Connected      int     `json:"connected"`
	Rooms          int     `json:"rooms"`
	Size           int     `json:"size"`
	Rate           float64 `json:"rate"`
	DurationS      float64 `json:"duration_s"`
	Expected       int64   `json:"expected_per_burst"`
	BurstRates     []any   `json:"burst_deliveries_per_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	P99ms          float64 `json:"p99_ms"`
	Missing        int64   `json:"missing"`
	Disconnected   int     `json:"disconnected"`
	Saturated      bool    `json:"saturated"`
	Error          string  `json:"error"`
}

func main() {
	in := flag.String("in", "results/latest.jsonl", "JSON lines files, comma-separated")
	out := flag.String("out", "results", "directory for the SVG files")
	pacedLabel := flag.String("paced-label", "paced", "label (-label) of the paced runs to plot")
	scalePrefix := flag.String("scale-prefix", "scale-", "label prefix of the burst runs to plot against connections")
	good := flag.Float64("good-p99", 50, "p99 threshold to mark on the latency plot, ms (0: none)")
	flag.Parse()

	var recs []rec
	for _, name := range strings.Split(*in, ",") {
		rs, err := readLines(name)
		if err != nil {
			log.Fatal(err)
		}
		recs = append(recs, rs...)
	}
	wrote := 0
	if p, ok := pacedPlot(recs, *pacedLabel, *good); ok {
		wrote += write(filepath.Join(*out, *pacedLabel+"-p99.svg"), p)
	} else {
		log.Printf("no paced points labelled %q in %s", *pacedLabel, *in)
	}
	if p, ok := scalePlot(recs, *scalePrefix); ok {
		wrote += write(filepath.Join(*out, *scalePrefix+"deliveries.svg"), p)
	} else {
		log.Printf("no burst runs labelled %q… in %s", *scalePrefix, *in)
	}
	if wrote == 0 {
		os.Exit(1)
	}
}

func readLines(name string) ([]rec, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rs []rec
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r rec
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			log.Printf("%s:%d: %v (skipped)", name, n, err)
			continue
		}
		rs = append(rs, r)
	}
	return rs, sc.Err()
}

func write(name string, svg string) int {
	if err := os.WriteFile(name, []byte(svg), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote", name)
	return 1
}

// series is one implementation's line.
type series struct {
	name   string
	pts    []point
	hollow []bool // per point: drawn hollow (loss)
}

type point struct{ x, y float64 }

// implOrder puts the implementations in the harness's order, others after.
func implOrder(names []string) []string {
	known := []string{"roomcast", "centrifuge", "gorilla", "melody"}
	slices.SortFunc(names, func(a, b string) int {
		ia, ib := slices.Index(known, a), slices.Index(known, b)
		if ia < 0 {
			ia = len(known)
		}
		if ib < 0 {
			ib = len(known)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	return names
}

func pacedPlot(recs []rec, label string, good float64) (string, bool) {
	type key struct {
		impl string
		rate float64
	}
	last := map[key]rec{}
	var any rec
	for _, r := range recs {
		if r.Mode == "paced" && r.Workload == label && r.Error == "" && r.P99ms > 0 {
			last[key{r.Impl, r.Rate}] = r
			any = r
		}
	}
	if len(last) == 0 {
		return "", false
	}
	names, byImpl := groupByImpl(last)
	var ss []series
	for _, n := range names {
		rs := byImpl[n]
		slices.SortFunc(rs, func(a, b rec) int { return cmpFloat(a.Rate, b.Rate) })
		s := series{name: n}
		for _, r := range rs {
			s.pts = append(s.pts, point{r.Rate, r.P99ms})
			s.hollow = append(s.hollow, r.Saturated || r.Missing > 0 || r.Disconnected > 0)
		}
		ss = append(ss, s)
	}
	perMsg := ""
	if any.Rooms > 0 && any.Connected > 0 {
		perMsg = fmt.Sprintf(" (each message to %s)", thousands(float64(any.Connected)/float64(any.Rooms)))
	}
	targets := "rooms"
	if any.Target == "user" {
		targets = "users"
	}
	c := chart{
		title: "p99 latency at a paced offered load",
		subtitle: []string{
			fmt.Sprintf("workload %s: %s %s subscribers in %s %s%s, %d B messages, each rate for %g s",
				label, thousands(float64(any.Conns)), transportName(any.Transport), thousands(float64(any.Rooms)), targets, perMsg, any.Size, any.DurationS),
			"message i due at start + i/rate and stamped with its due time: a publisher's stall counts as latency",
		},
		xLabel: "offered rate (messages/s, all " + targets + " together)",
		yLabel: "p99 latency, publish → receive (ms, log scale)",
		series: ss,
		yLog:   true,
	}
	if m := mixed(last, func(r rec) string {
		return fmt.Sprintf("%d %s subscribers, %d %s, %d B, %g s", r.Conns, r.Transport, r.Rooms, r.Target, r.Size, r.DurationS)
	}); m != "" {
		c.subtitle[0] = "workload " + label + ", MIXED SETTINGS: " + m
	}
	c.xLog = spread(ss, func(p point) float64 { return p.x }) > 15
	c.xZero = !c.xLog
	if good > 0 {
		c.hline, c.hlineLabel = good, fmt.Sprintf("%g ms", good)
	}
	return c.svg(), true
}

func scalePlot(recs []rec, prefix string) (string, bool) {
	type key struct {
		impl  string
		conns int
	}
	last := map[key]rec{}
	var any rec
	for _, r := range recs {
		if r.Mode == "" && strings.HasPrefix(r.Workload, prefix) && r.Impl != "" && r.DeliveriesPerS > 0 {
			last[key{r.Impl, r.Conns}] = r
			any = r
		}
	}
	if len(last) == 0 {
		return "", false
	}
	names, byImpl := groupByImpl(last)
	var ss []series
	for _, n := range names {
		rs := byImpl[n]
		slices.SortFunc(rs, func(a, b rec) int { return a.Conns - b.Conns })
		s := series{name: n}
		for _, r := range rs {
			s.pts = append(s.pts, point{float64(r.Conns), r.DeliveriesPerS})
			s.hollow = append(s.hollow, r.Missing > 0 || r.Disconnected > 0)
		}
		ss = append(ss, s)
	}
	burst := ""
	if any.Connected > 0 && any.Expected > 0 {
		burst = fmt.Sprintf(", bursts of %d messages to each connection", any.Expected/int64(any.Connected))
	}
	nb := len(any.BurstRates)
	if m := mixed(last, func(r rec) string {
		n := int64(0)
		if r.Connected > 0 {
			n = r.Expected / int64(r.Connected)
		}
		return fmt.Sprintf("%s, %d per burst, %d bursts", r.Transport, n, len(r.BurstRates))
	}); m != "" {
		burst = ", MIXED SETTINGS: " + m
	}
	c := chart{
		title: "Fan-out throughput against connection count",
		subtitle: []string{fmt.Sprintf("workloads %sN (N connections): %s subscribers in one room%s, median of %d bursts",
			prefix, transportName(any.Transport), burst, nb)},
		xLabel: "connections",
		yLabel: "deliveries/s (median burst)",
		series: ss,
		xZero:  true,
		yZero:  true,
	}
	return c.svg(), true
}

// mixed lists the distinct settings (as f describes them) among the
// plotted points, or "" when they all agree.
func mixed[K comparable](pts map[K]rec, f func(rec) string) string {
	var seen []string
	for _, r := range pts {
		if d := f(r); !slices.Contains(seen, d) {
			seen = append(seen, d)
		}
	}
	if len(seen) < 2 {
		return ""
	}
	slices.Sort(seen)
	return strings.Join(seen, " / ")
}

func transportName(t string) string {
	switch t {
	case "sse":
		return "SSE"
	case "ws", "":
		return "WebSocket"
	}
	return t
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// spread is max/min of the positive values of f over all points.
func spread(ss []series, f func(point) float64) float64 {
	lo, hi := math.Inf(1), 0.0
	for _, s := range ss {
		for _, p := range s.pts {
			if v := f(p); v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if hi == 0 {
		return 1
	}
	return hi / lo
}

// chart is a line chart with markers.
type chart struct {
	title, xLabel, yLabel string
	subtitle              []string // one line each
	series                []series
	xLog, yLog            bool
	xZero, yZero          bool    // linear axis starts at 0
	hline                 float64 // a dashed reference line at this y (0: none)
	hlineLabel            string
}

const (
	width, height                      = 900, 560
	marginL, marginR, marginT, marginB = 90, 180, 92, 64
)

var palette = []string{"#1f6fb4", "#e4761b", "#2b9a3e", "#8e4fb8", "#c23b3b", "#7a6a58"}

// axis maps data values to pixels.
type axis struct {
	lo, hi   float64 // data range (log axes: the values, not their logs)
	log      bool
	p0, p1   float64 // pixel range
	ticks    []float64
	minor    []float64
	tickText func(float64) string
}

func (a axis) px(v float64) float64 {
	if a.log {
		return a.p0 + (math.Log10(v)-math.Log10(a.lo))/(math.Log10(a.hi)-math.Log10(a.lo))*(a.p1-a.p0)
	}
	return a.p0 + (v-a.lo)/(a.hi-a.lo)*(a.p1-a.p0)
}

// makeAxis fits an axis to vals. A log axis spans whole decades, or with
// tight just the data (a margin each side) with ticks at 1, 2 and 5 times a
// power of ten; a linear one has 4–8 round ticks, from 0 with zero.
func makeAxis(vals []float64, isLog, zero, tight bool, p0, p1 float64, format func(float64) string) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if isLog && v <= 0 {
			continue
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	a := axis{log: isLog, p0: p0, p1: p1, tickText: format}
	if isLog && tight {
		a.lo, a.hi = lo/1.3, hi*1.3
		for d := math.Floor(math.Log10(a.lo)); d <= math.Ceil(math.Log10(a.hi)); d++ {
			for m := 1.0; m <= 9; m++ {
				v := m * math.Pow(10, d)
				if v < a.lo || v > a.hi {
					continue
				}
				if m == 1 || m == 2 || m == 5 {
					a.ticks = append(a.ticks, v)
				} else {
					a.minor = append(a.minor, v)
				}
			}
		}
		return a
	}
	if isLog {
		// Whole decades around the data, with 2 and 5 between.
		dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		if dhi == dlo {
			dhi++
		}
		a.lo, a.hi = math.Pow(10, dlo), math.Pow(10, dhi)
		for d := dlo; d <= dhi; d++ {
			base := math.Pow(10, d)
			a.ticks = append(a.ticks, base)
			if d < dhi {
				for _, m := range []float64{2, 3, 4, 5, 6, 7, 8, 9} {
					a.minor = append(a.minor, base*m)
				}
			}
		}
		if dhi-dlo <= 2 { // few decades: label 2 and 5 too
			var more []float64
			for _, m := range a.minor {
				if f := m / math.Pow(10, math.Floor(math.Log10(m)+1e-9)); math.Abs(f-2) < 1e-9 || math.Abs(f-5) < 1e-9 {
					more = append(more, m)
				}
			}
			a.ticks = append(a.ticks, more...)
			slices.Sort(a.ticks)
		}
		return a
	}
	if zero {
		lo = min(lo, 0)
	}
	if hi == lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 5)
	a.lo = math.Floor(lo/step) * step
	a.hi = math.Ceil(hi/step) * step
	if a.hi-hi < 0.04*(a.hi-a.lo) { // room above the top point
		a.hi += step
	}
	if lo-a.lo < 0.04*(a.hi-a.lo) && a.lo-step >= 0 { // and below the lowest, staying ≥ 0
		a.lo -= step
	}
	for v := a.lo; v <= a.hi+step/2; v += step {
		a.ticks = append(a.ticks, v)
	}
	return a
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*e {
			return m * e
		}
	}
	return 10 * e
}

func (c chart) svg() string {
	var xs, ys []float64
	for _, s := range c.series {
		for _, p := range s.pts {
			xs, ys = append(xs, p.x), append(ys, p.y)
		}
	}
	if c.hline > 0 {
		ys = append(ys, c.hline)
	}
	left, right := float64(marginL), float64(width-marginR)
	top, bottom := float64(marginT), float64(height-marginB)
	xa := makeAxis(xs, c.xLog, c.xZero, true, left, right, siNumber)
	ya := makeAxis(ys, c.yLog, c.yZero, false, bottom, top, siNumber)
	if c.yLog {
		ya.tickText = msText
	}

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">`+"\n", width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	w(`<text x="%g" y="30" font-size="20" font-weight="bold" fill="#222">%s</text>`+"\n", left, esc(c.title))
	for i, line := range c.subtitle {
		w(`<text x="%g" y="%d" font-size="12.5" fill="#555">%s</text>`+"\n", left, 52+i*17, esc(line))
	}

	// Grid and ticks.
	w(`<g stroke="#e6e6e6" stroke-width="1">` + "\n")
	for _, t := range ya.minor {
		if t > ya.lo && t < ya.hi {
			w(`<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#f3f3f3"/>`+"\n", left, ya.px(t), right, ya.px(t))
		}
	}
	for _, t := range xa.minor {
		if t > xa.lo && t < xa.hi {
			w(`<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#f3f3f3"/>`+"\n", xa.px(t), top, xa.px(t), bottom)
		}
	}
	for _, t := range ya.ticks {
		w(`<line x1="%g" y1="%.1f" x2="%g" y2="%.1f"/>`+"\n", left, ya.px(t), right, ya.px(t))
	}
	for _, t := range xa.ticks {
		w(`<line x1="%.1f" y1="%g" x2="%.1f" y2="%g"/>`+"\n", xa.px(t), top, xa.px(t), bottom)
	}
	w("</g>\n")
	w(`<g font-size="12" fill="#333">` + "\n")
	for _, t := range ya.ticks {
		w(`<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#333"/>`+"\n", left-5, ya.px(t), left, ya.px(t))
		w(`<text x="%g" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-8, ya.px(t), esc(ya.tickText(t)))
	}
	for _, t := range xa.ticks {
		w(`<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#333"/>`+"\n", xa.px(t), bottom, xa.px(t), bottom+5)
		w(`<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", xa.px(t), bottom+19, esc(xa.tickText(t)))
	}
	w("</g>\n")
	w(`<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#333" stroke-width="1"/>`+"\n", left, top, right-left, bottom-top)
	w(`<text x="%g" y="%d" font-size="13.5" text-anchor="middle" fill="#222">%s</text>`+"\n", (left+right)/2, height-18, esc(c.xLabel))
	w(`<text transform="translate(24 %g) rotate(-90)" font-size="13.5" text-anchor="middle" fill="#222">%s</text>`+"\n", (top+bottom)/2, esc(c.yLabel))

	if c.hline > 0 {
		y := ya.px(c.hline)
		w(`<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#b03030" stroke-width="1.2" stroke-dasharray="6 4"/>`+"\n", left, y, right, y)
		w(`<text x="%g" y="%.1f" font-size="11.5" fill="#b03030">%s</text>`+"\n", left+5, y-5, esc(c.hlineLabel))
	}

	// Lines and markers, clipped to the plot area.
	w(`<clipPath id="plot"><rect x="%g" y="%g" width="%g" height="%g"/></clipPath>`+"\n", left-6, top-6, right-left+12, bottom-top+12)
	w(`<g clip-path="url(#plot)">` + "\n")
	for i, s := range c.series {
		col := palette[i%len(palette)]
		var d strings.Builder
		for j, p := range s.pts {
			if (c.xLog && p.x <= 0) || (c.yLog && p.y <= 0) {
				continue
			}
			cmd := "L"
			if j == 0 || d.Len() == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, xa.px(p.x), ya.px(p.y))
		}
		w(`<path d="%s" fill="none" stroke="%s" stroke-width="2.2" stroke-linejoin="round"/>`+"\n", strings.TrimSpace(d.String()), col)
		for j, p := range s.pts {
			if (c.xLog && p.x <= 0) || (c.yLog && p.y <= 0) {
				continue
			}
			w("%s\n", marker(i, xa.px(p.x), ya.px(p.y), col, s.hollow[j]))
		}
	}
	w("</g>\n")

	// Legend, right of the plot.
	lx, ly := right+18, top+8
	w(`<g font-size="13" fill="#222">` + "\n")
	for i, s := range c.series {
		col := palette[i%len(palette)]
		y := ly + float64(i)*24
		w(`<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2.2"/>`+"\n", lx, y, lx+28, y, col)
		w("%s\n", marker(i, lx+14, y, col, false))
		w(`<text x="%g" y="%g" dominant-baseline="middle">%s</text>`+"\n", lx+36, y, esc(s.name))
	}
	if hollow := slices.ContainsFunc(c.series, func(s series) bool { return slices.Contains(s.hollow, true) }); hollow {
		y := ly + float64(len(c.series))*24 + 8
		w("%s\n", marker(0, lx+14, y, "#666", true))
		w(`<text x="%g" y="%g" dominant-baseline="middle" font-size="12" fill="#444">loss or closed</text>`+"\n", lx+36, y)
		w(`<text x="%g" y="%g" dominant-baseline="middle" font-size="12" fill="#444">connections</text>`+"\n", lx+36, y+15)
	}
	w("</g>\n</svg>\n")
	return b.String()
}

// marker draws series i's shape (circle, square, triangle, diamond…) so the
// lines stay apart without colour.
func marker(i int, x, y float64, col string, hollow bool) string {
	fill := col
	if hollow {
		fill = "#ffffff"
	}
	st := fmt.Sprintf(`fill="%s" stroke="%s" stroke-width="1.6"`, fill, col)
	switch i % 5 {
	case 0:
		return fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="4.5" %s/>`, x, y, st)
	case 1:
		return fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="8" height="8" %s/>`, x-4, y-4, st)
	case 2:
		return fmt.Sprintf(`<path d="M%.1f %.1f L%.1f %.1f L%.1f %.1f Z" %s/>`, x, y-5.5, x+5, y+3.5, x-5, y+3.5, st)
	case 3:
		return fmt.Sprintf(`<path d="M%.1f %.1f L%.1f %.1f L%.1f %.1f L%.1f %.1f Z" %s/>`, x, y-5.5, x+5, y, x, y+5.5, x-5, y, st)
	default:
		return fmt.Sprintf(`<path d="M%.1f %.1f L%.1f %.1f L%.1f %.1f L%.1f %.1f Z" %s/>`, x-4, y-4, x+4, y+4, x+4, y-4, x-4, y+4, st)
	}
}

func esc(s string) string { return html.EscapeString(s) }

// siNumber writes 20000 as 20k and 1500000 as 1.5M.
func siNumber(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return trim(v/1e6) + "M"
	case a >= 1e3:
		return trim(v/1e3) + "k"
	}
	return trim(v)
}

// msText writes milliseconds as 0.5 ms, 20 ms, 2 s.
func msText(v float64) string {
	if v >= 1000 {
		return trim(v/1000) + " s"
	}
	return trim(v) + " ms"
}

func trim(v float64) string { return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64) }

// thousands writes 19500 as 19,500.
func thousands(v float64) string {
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// groupByImpl groups records by implementation, names in the report's order.
func groupByImpl[K comparable](last map[K]rec) ([]string, map[string][]rec) {
	m := map[string][]rec{}
	for _, r := range last {
		m[r.Impl] = append(m[r.Impl], r)
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	return implOrder(names), m
}
