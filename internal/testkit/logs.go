package testkit

import (
	"context"
	"log/slog"
	"sync"
)

// Logs is a slog.Handler that keeps every record, for tests that assert
// what the library logged.
type Logs struct {
	mu   sync.Mutex
	recs []Record
}

// Record is one kept log record, its attributes as text.
type Record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// Logger returns a logger writing to l.
func (l *Logs) Logger() *slog.Logger { return slog.New(l) }

func (l *Logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *Logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *Logs) WithGroup(string) slog.Handler            { return l }

func (l *Logs) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool { rec.Attrs[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	l.recs = append(l.recs, rec)
	l.mu.Unlock()
	return nil
}

// At returns the records at level or above.
func (l *Logs) At(level slog.Level) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Record
	for _, r := range l.recs {
		if r.Level >= level {
			out = append(out, r)
		}
	}
	return out
}
