// Command ticker is a live stock dashboard: Go code publishes prices
// several times a second to one room per symbol, and the page follows them
// over Server-Sent Events only: the one-way case, with no login.
//
//	go run ./examples/ticker          # then open http://127.0.0.1:8082
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/examples/internal/demoapp"
)

//go:embed index.html
var indexHTML []byte

var symbols = []string{"AAPL", "MSFT", "NVDA", "GOOG", "TSLA", "AMZN"}

func main() {
	addr := flag.String("addr", "127.0.0.1:8082", "listen address")
	interval := flag.Duration("interval", 250*time.Millisecond, "time between two prices of a symbol")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ps, err := pubsub.New(pubsub.WithLogger(logger))
	if err != nil {
		log.Fatal(err)
	}
	m := newMarket()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.run(ctx, ps, *interval)
	if err := demoapp.Serve(*addr, newApp(ps, m), ps, logger); err != nil {
		log.Fatal(err)
	}
}

type tick struct {
	Symbol string  `json:"symbol"`
	Price  float64 `json:"price"`
	At     int64   `json:"at"` // unix milliseconds
}

// market is a random walk per symbol, with the last minute of prices kept
// so a page that opens has a chart at once.
type market struct {
	mu      sync.Mutex
	prices  map[string]float64
	history map[string][]tick
}

const historyLen = 240

func newMarket() *market {
	m := &market{prices: map[string]float64{}, history: map[string][]tick{}}
	for i, s := range symbols {
		m.prices[s] = 100 + 75*float64(i)
	}
	return m
}

func (m *market) run(ctx context.Context, ps *pubsub.Broker, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range symbols {
			data, _ := json.Marshal(m.step(s))
			// One room per symbol: a page receives only what it shows.
			if err := ps.Publish(ctx, "ticker:"+s, data); err != nil {
				return
			}
		}
	}
}

func (m *market) step(s string) tick {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.prices[s] * math.Exp(rand.NormFloat64()*0.002)
	m.prices[s] = p
	t := tick{Symbol: s, Price: math.Round(p*100) / 100, At: time.Now().UnixMilli()}
	h := append(m.history[s], t)
	if len(h) > historyLen {
		h = h[len(h)-historyLen:]
	}
	m.history[s] = h
	return t
}

func newApp(ps *pubsub.Broker, m *market) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", demoapp.Page(indexHTML))
	mux.HandleFunc("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		data, _ := json.Marshal(map[string]any{"symbols": symbols, "history": m.history})
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	})
	// Public, read-only: no login, and clients cannot publish (the default).
	mux.Handle("/live", ps.Handler())
	mux.Handle("GET /live/client.js", ps.Handler())
	return mux
}
