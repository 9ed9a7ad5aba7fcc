package embedded

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// nats-server's notices that say the cluster is degraded are Warn, those
// that say it is healthy again Info, the rest Debug; a burst of one kind
// of line is one line.
func TestServerLogLevels(t *testing.T) {
	rec := &records{}
	l := newServerLog(slog.New(rec))
	l.Noticef("%s - %s", "127.0.0.1:6223 - rid:5", "Router connection closed: Stale Connection - Remote: node0")
	l.Noticef("%s - %s", "127.0.0.1:6224 - rid:9", "Router connection closed: Client Closed") // same kind, suppressed
	l.Noticef("%s - %s", "127.0.0.1:6223 - rid:7", "Route connection created")
	l.Noticef("JetStream cluster new stream leader for '%s > %s'", "$G", "ROOMCAST_HISTORY")
	l.Noticef("Starting nats-server")
	for range 50 {
		l.Errorf("JetStream failed to store a msg on stream '%s': %v", "$G > ROOMCAST_HISTORY", "no space left on device")
	}
	want := []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelWarn, "127.0.0.1:6223 - rid:5 - Router connection closed: Stale Connection - Remote: node0"},
		{slog.LevelInfo, "127.0.0.1:6223 - rid:7 - Route connection created"},
		{slog.LevelInfo, "JetStream cluster new stream leader for '$G > ROOMCAST_HISTORY'"},
		{slog.LevelDebug, "Starting nats-server"},
		{slog.LevelError, "JetStream failed to store a msg on stream '$G > ROOMCAST_HISTORY': no space left on device"},
	}
	if len(rec.recs) != len(want) {
		for _, r := range rec.recs {
			t.Log(r.Level, r.Message)
		}
		t.Fatalf("%d lines, want %d", len(rec.recs), len(want))
	}
	for i, w := range want {
		if r := rec.recs[i]; r.Level != w.level || r.Message != w.msg {
			t.Errorf("line %d: %v %q, want %v %q", i, r.Level, r.Message, w.level, w.msg)
		}
	}
}
