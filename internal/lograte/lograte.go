// Package lograte keeps a repeated log line from flooding the host's log:
// the first occurrence of a cause is logged, then at most one per interval,
// saying how many were left out in between.
package lograte

import (
	"sync"
	"time"
)

// Limiter decides, per key (a cause: "websocket:*main.logWriter"), whether
// a line may be logged now. The zero value is not usable; see New.
type Limiter struct {
	every time.Duration

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	last       time.Time
	suppressed int
}

// maxKeys bounds the causes remembered; past it the memory is cleared, so
// hostile input that varies the key costs at most one line per key.
const maxKeys = 1024

// New returns a Limiter that lets one line per key through every interval.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, keys: make(map[string]*entry)}
}

// Allow reports whether a line for key may be logged now and, if so, how
// many lines for it were left out since the last one.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= maxKeys {
			clear(l.keys)
		}
		l.keys[key] = &entry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < l.every {
		e.suppressed++
		return false, 0
	}
	suppressed, e.suppressed, e.last = e.suppressed, 0, now
	return true, suppressed
}

// First reports whether this is the first time key is seen: for notes
// worth one line in a process's life.
func (l *Limiter) First(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.keys[key]; seen {
		return false
	}
	if len(l.keys) >= maxKeys {
		clear(l.keys)
	}
	l.keys[key] = &entry{last: time.Now().Add(1 << 62)}
	return true
}
