package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/wire"
)

// Errors of Publish, which the broker maps to its own.
var (
	// ErrOutcomeUnknown: the caller's context ended while the store had
	// not answered an attempt that may have stored the message. A retry
	// with the same message id is stored at most once.
	ErrOutcomeUnknown = errors.New("history: publish outcome unknown")
	// ErrStoreFailed: the store refused to write (a full disk, an I/O
	// error, no resources): the message is not stored.
	ErrStoreFailed = errors.New("history: the store cannot write")
)

// Publish timing: each attempt waits at most attemptTimeout for the
// store's acknowledgement; a retryable failure waits a backoff from
// retryFirst doubling to retryMax, all within the caller's context.
const (
	attemptTimeout = 2 * time.Second
	// maxRetryFor bounds a publish's retries inside JetStream's duplicate
	// window (two minutes), so that a retry is never stored twice.
	maxRetryFor = 90 * time.Second
	retryFirst  = 25 * time.Millisecond
	retryMax    = time.Second
)

// Publish stores env in room's history and returns its position. msgID
// identifies the message for the store's de-duplication (JetStream's
// Nats-Msg-Id, within the stream's duplicate window of two minutes): a
// message published again with the same id, by this call's own retries or
// by a caller's, is stored once and answered with its first position.
// Timeouts and "no responders" (a leader election, a node restarting) are
// retried until ctx ends or maxRetryFor has passed (well inside the
// duplicate window); then an attempt that may have been stored gives
// ErrOutcomeUnknown. A write the store refuses explicitly is
// ErrStoreFailed (not stored); a timeout while its disk is full is both
// ErrOutcomeUnknown and ErrStoreFailed. While the store is known to fail,
// publishes fail fast with ErrStoreFailed but for one probe at a time.
func (s *Store) Publish(ctx context.Context, room string, rule Rule, env wire.Envelope, msgID string) (uint64, error) {
	subj := s.cfg.Subjects.Hist(room)
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(msgID)}
	if rule.MaxAge > 0 {
		opts = append(opts, jetstream.WithMsgTTL(rule.MaxAge))
	}
	payload := wire.AppendEnvelope(nil, wire.Envelope{From: env.From, Data: env.Data})
	probing, err := s.admit()
	if err != nil {
		return 0, err // refusing writes: fail fast
	}
	if probing {
		defer s.probed()
	}
	ambiguous := false // an attempt may have been stored
	recovered := false
	wait := retryFirst
	first := time.Now()
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		pub, err := s.js.Publish(actx, subj, payload, opts...)
		cancel()
		if err == nil {
			s.wrote()
			if !pub.Duplicate {
				s.trim(ctx, room, subj, rule)
			}
			return pub.Sequence, nil
		}
		refused, lost, full := storeRefused(err), false, false
		if !refused {
			lost, full = s.writeLost(err)
		}
		if refused || lost {
			if full {
				err = fmt.Errorf("%w (%w)", errDiskFull, err)
			}
			s.refused(err)
			if !recovered && s.tryRecover() {
				recovered = true
				continue // the same message id: stored once whatever happened
			}
			if refused && !ambiguous {
				return 0, fmt.Errorf("%w: %w", ErrStoreFailed, err)
			}
			return 0, fmt.Errorf("%w: %w: %w", ErrOutcomeUnknown, ErrStoreFailed, err)
		}
		// An attempt cut short (by its timeout or by the caller) may have
		// reached the store.
		cut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout)
		ambiguous = ambiguous || cut
		if !retryable(err) && !cut || probing || time.Since(first) > maxRetryFor {
			if ambiguous {
				return 0, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
			}
			return 0, err
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, retryMax)
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			if ambiguous {
				return 0, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
			}
			return 0, fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		}
	}
}

// trim applies a room's count limit when it keeps fewer than the stream.
func (s *Store) trim(ctx context.Context, room, subj string, rule Rule) {
	if rule.Messages > 0 && (s.maxKeep == 0 || rule.Messages < s.maxKeep) {
		if err := s.stream.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(uint64(rule.Messages))); err != nil {
			s.cfg.Log.Warn("pubsub: trimming history", "room", room, "err", err)
		}
	}
}

// retryable reports a failure that says nothing about the message but
// "not now": no stream leader, no answer in time.
func retryable(err error) bool {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return true
	case errors.As(err, &api):
		return api.Code == 503 && !storeRefused(err) // "JetStream system temporarily unavailable", …
	}
	return false
}

// storeRefused reports the store declining to write: no space, an I/O
// error, no resources left for the stream.
func storeRefused(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode {
	case 10077, // JSStreamStoreFailedF: "error when storing a message failed" (no space left on device, …)
		10047: // JSStorageResourcesExceededErr
		return true
	}
	return false
}

// resumeRetryFor bounds how long a resume retries a store that says "not
// now" before it gives up (and the connection is told to come back).
const resumeRetryFor = 5 * time.Second

// retryTransient runs op until it succeeds, fails for good, ctx ends or
// resumeRetryFor has passed since the first failure.
func (s *Store) retryTransient(ctx context.Context, op func() error) error {
	var first time.Time
	wait := retryFirst
	for {
		err := op()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if first.IsZero() {
			first = time.Now()
		} else if time.Since(first) > resumeRetryFor {
			return err
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, retryMax)
		case <-ctx.Done():
			return err
		}
	}
}

// writeLost reports a publish that timed out because the store could not
// write it: its disk is full, or it is refusing writes already (a stream
// that failed a write stays in that state until JetStream restarts).
// full says the disk is (nearly) full now, the cause to name.
func (s *Store) writeLost(err error) (lost, full bool) {
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return false, false
	}
	full = s.cfg.Full != nil && s.cfg.Full()
	return full || s.failing(), full
}

// errDiskFull names the cause of a write lost on a full disk.
var errDiskFull = errors.New("no answer, and the store's disk is full")
