package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/roomcast/pubsub/internal/lograte"
)

// serverLog passes nats-server's log to the host's slog.Logger at the level
// an operator needs: its notices are mostly start-up chatter (Debug), but
// some say the cluster is degraded (a route lost, no metadata leader: Warn)
// or healthy again (a route back, a new leader: Info). Lines of one kind
// are logged at most once in 10 s, with a count of those suppressed (a
// full disk makes the server log an error per refused write).
type serverLog struct {
	l     *slog.Logger
	limit *lograte.Limiter
}

func newServerLog(l *slog.Logger) *serverLog {
	return &serverLog{l: l, limit: lograte.New(10 * time.Second)}
}

// notices that matter, by a fragment of their text.
var notices = []struct {
	fragment, kind string
	level          slog.Level
}{
	{"Router connection closed", "route-down", slog.LevelWarn},
	{"Route connection created", "route-up", slog.LevelInfo},
	{"JetStream cluster no metadata leader", "no-meta-leader", slog.LevelWarn},
	{"new metadata leader", "meta-leader", slog.LevelInfo},
	{"Self is new JetStream cluster metadata leader", "meta-leader", slog.LevelInfo},
	{"JetStream cluster new stream leader", "stream-leader", slog.LevelInfo},
	{"Slow Consumer Detected", "slow-consumer", slog.LevelWarn},
}

func (a *serverLog) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	for _, n := range notices {
		if strings.Contains(msg, n.fragment) {
			a.log(n.level, n.kind, msg)
			return
		}
	}
	a.l.Debug(msg)
}

func (a *serverLog) Warnf(format string, v ...any) {
	a.log(slog.LevelWarn, format, fmt.Sprintf(format, v...))
}
func (a *serverLog) Errorf(format string, v ...any) {
	a.log(slog.LevelError, format, fmt.Sprintf(format, v...))
}
func (a *serverLog) Fatalf(format string, v ...any) { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *serverLog) Debugf(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *serverLog) Tracef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }

// log logs msg at level, once per kind in the limiter's interval. A kind
// that is a format string keeps the words of it, not its client prefix
// (nats-server formats "<addr> - rid:N - " into per-connection lines).
func (a *serverLog) log(level slog.Level, kind, msg string) {
	if i := strings.LastIndex(kind, " - "); i >= 0 {
		kind = kind[i+3:]
	}
	if ok, suppressed := a.limit.Allow(kind); ok {
		if suppressed > 0 {
			a.l.Log(context.Background(), level, msg, "suppressed", suppressed)
			return
		}
		a.l.Log(context.Background(), level, msg)
	}
}
