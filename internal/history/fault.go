package history

import (
	"fmt"
	"sync"
	"time"
)

// A store that refuses writes (its disk full, an I/O error) stays that
// way for a while: publishes then fail at once, without a round trip,
// but for one probe every probeEvery that finds out when writes work
// again; where the broker can restart the store (Config.Recover), a
// probe that is refused tries that at most every recoverEvery.
const (
	probeEvery   = time.Second
	recoverEvery = 2 * time.Second
	// faultFor: a fault no refusal has renewed for this long is forgotten,
	// so that an instance nobody publishes through (a pod out of its
	// service while not ready) does not stay failed for ever.
	faultFor = 10 * time.Second
)

// fault is the store's write failure, if any.
type fault struct {
	mu         sync.Mutex
	err        error // nil: writes work
	since      time.Time
	last       time.Time // the last refusal
	restarting bool      // Recover is running
	probed     time.Time
	probing    bool // a publish is trying the store
	recovering time.Time
	told       map[string]struct{} // rooms whose subscribers were told, this episode
}

// maxTold bounds the rooms remembered as told in one episode.
const maxTold = 4096

// Tell reports whether room's subscribers are to be told, once per
// episode, that its history cannot store messages.
func (s *Store) Tell(room string) bool {
	f := &s.fault
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		return false
	}
	if _, done := f.told[room]; done || len(f.told) >= maxTold {
		return false
	}
	if f.told == nil {
		f.told = make(map[string]struct{})
	}
	f.told[room] = struct{}{}
	return true
}

// Fault returns ErrStoreFailed, wrapping its cause, while the store
// refuses writes; nil otherwise.
func (s *Store) Fault() error {
	s.fault.mu.Lock()
	defer s.fault.mu.Unlock()
	s.fault.expire()
	if s.fault.err == nil {
		return nil
	}
	return fmt.Errorf("%w since %s: %w", ErrStoreFailed, s.fault.since.Format(time.RFC3339), s.fault.err)
}

// admit says whether a publish may try the store now: always when it
// works; when it does not, one publish at a time, once per probeEvery
// (probing reports that this one is the probe: release it with probed).
// The others fail fast.
func (s *Store) admit() (probing bool, err error) {
	f := &s.fault
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expire()
	if f.err == nil {
		return false, nil
	}
	if !f.probing && time.Since(f.probed) >= probeEvery {
		f.probing = true
		return true, nil
	}
	return false, fmt.Errorf("%w: %w", ErrStoreFailed, f.err)
}

// probed ends a probe.
func (s *Store) probed() {
	f := &s.fault
	f.mu.Lock()
	f.probing, f.probed = false, time.Now()
	f.mu.Unlock()
}

// refused records a write the store refused; the first of an episode is
// logged at Error with what to do.
func (s *Store) refused(err error) {
	f := &s.fault
	f.mu.Lock()
	first := f.err == nil
	if first {
		f.since = time.Now()
	}
	f.err, f.last, f.probed = err, time.Now(), time.Now() // a refusal is as good as a probe
	f.mu.Unlock()
	if first {
		s.cfg.Log.Error("pubsub: the history store cannot write: publishes to rooms with history fail (ErrStoreFailed, store_failed) until it can; rooms without history and live delivery go on; free space on the store's disk (the broker retries every second and recovers by itself)",
			"err", err)
	}
}

// wrote records a write that worked; the end of an episode is logged.
func (s *Store) wrote() {
	f := &s.fault
	f.mu.Lock()
	if f.err == nil {
		f.mu.Unlock()
		return
	}
	since := f.since
	f.clear()
	f.mu.Unlock()
	s.cfg.Log.Info("pubsub: the history store writes again", "after", time.Since(since).Round(time.Millisecond))
}

// tryRecover restarts the store through Config.Recover, if it is due.
// It reports whether it restarted it.
func (s *Store) tryRecover() bool {
	f := &s.fault
	f.mu.Lock()
	due := s.cfg.Recover != nil && f.err != nil && !f.restarting && time.Since(f.recovering) >= recoverEvery
	if due {
		f.recovering, f.restarting = time.Now(), true
	}
	f.mu.Unlock()
	if !due {
		return false
	}
	err := s.cfg.Recover()
	f.mu.Lock()
	f.restarting = false
	f.mu.Unlock()
	if err != nil {
		s.cfg.Log.Debug("pubsub: history store not recovered yet", "err", err)
		return false
	}
	s.cfg.Log.Info("pubsub: restarted the history store (JetStream) after its disk had room again")
	// Writes are tried again at once; the next refusal records a new fault.
	f.mu.Lock()
	f.clear()
	f.probed = time.Time{}
	f.mu.Unlock()
	return true
}

// expire forgets a fault no refusal has renewed for faultFor. Call with
// f.mu held.
func (f *fault) expire() {
	if f.err != nil && time.Since(f.last) > faultFor {
		f.clear()
	}
}

// clear ends the episode: writes work. Call with f.mu held.
func (f *fault) clear() { f.err, f.told = nil, nil }

// failing reports whether a fault is recorded (and not expired).
func (s *Store) failing() bool {
	s.fault.mu.Lock()
	defer s.fault.mu.Unlock()
	s.fault.expire()
	return s.fault.err != nil
}
