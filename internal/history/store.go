// Package history is room history on JetStream, and the lossless resume of
// a connection from it.
//
// One stream holds every room's history (subjects <ns>.hist.<room>), the
// pattern NATS KV uses: a stream per room would cost ~50 KB and goroutines
// each. Once stored, the stream republishes each message with its sequence
// on the room's live subject (<ns>.live.<room>): subscribers get messages in
// store order, and the store position is the message id.
//
// store.go opens the stream, stores and reads; resume.go replays what a
// reconnecting client missed and merges it with the live messages.
package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/stats"
	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// Rule is how much of the past of the rooms matching Pattern is kept.
type Rule struct {
	Pattern  string // path.Match syntax
	Messages int
	MaxAge   time.Duration
}

// Config opens a Store.
type Config struct {
	NC        *nats.Conn
	Log       *slog.Logger
	Subjects  subject.Space
	Namespace string
	Rules     []Rule
	File      bool   // file storage (memory otherwise)
	Replicas  int    // 1, 3 or 5
	Domain    string // JetStream domain, "" for the local one
	Stats     *stats.Set
	// MaxBytes bounds the stream (0: 256 MiB in memory, 1 GiB on file).
	MaxBytes int64
	// MaxBytesIsDefault: MaxBytes was computed, not chosen by the host,
	// so an existing stream's larger limit is kept (the space its
	// messages take is not free space any more; lowering the limit would
	// drop acknowledged history).
	MaxBytesIsDefault bool
	// Recover, if set, is tried (at most every recoverEvery) while the
	// store refuses writes: it restarts the store when its disk has room
	// again (an embedded server's JetStream). It returns an error while
	// it cannot.
	Recover func() error
	// Full, if set, reports the store's disk (nearly) full. nats-server
	// does not answer a publish it could not write (it logs "no space left
	// on device"), so a timeout with a full disk is a refused write.
	Full func() bool
}

// MaxConcurrentResumes bounds the replays one instance runs at once, each
// holding up to a batch (1 MiB) of messages: a reconnect storm costs at
// most that much memory for replays, the other resumes wait their turn
// with their rooms held.
const MaxConcurrentResumes = 64

// Limits of the history stream.
const (
	memoryBytes = 256 << 20
	fileBytes   = 1 << 30
)

// Store is the broker's JetStream side.
type Store struct {
	cfg     Config
	js      jetstream.JetStream
	stream  jetstream.Stream
	name    string
	maxKeep int    // the stream's per-room count limit, the largest of the rules
	api     string // "$JS.API." or "$JS.<domain>.API."

	fault   fault         // writes refused: fail fast, recover
	resumes chan struct{} // replays in progress, at most MaxConcurrentResumes

	sizeMu              sync.Mutex // one Size round trip at a time
	sizeMsgs, sizeBytes atomic.Uint64
	sizeAt              time.Time
}

// Message is one stored message.
type Message struct {
	Seq     uint64
	Subject string // the store subject: its room
	From    string
	Data    []byte
	Time    time.Time
}

// ValidateRules checks rules before anything starts.
func ValidateRules(rules []Rule) error {
	for _, r := range rules {
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return fmt.Errorf("history pattern %q: %w", r.Pattern, err)
		}
		if r.Messages < 0 || r.MaxAge < 0 || (r.Messages == 0 && r.MaxAge == 0) {
			return fmt.Errorf("history for %q needs a positive Messages or MaxAge", r.Pattern)
		}
		if r.MaxAge > 0 && r.MaxAge < time.Second {
			return fmt.Errorf("history MaxAge for %q is under a second", r.Pattern)
		}
	}
	return nil
}

// startTimeout bounds Open's wait for a JetStream cluster to form.
const startTimeout = time.Minute

// Open creates or updates the one stream that holds every room's history.
// A JetStream cluster answers once its nodes have elected a leader, which
// takes a quorum of them: instances that start together wait for each
// other here, up to a minute.
func Open(cfg Config) (*Store, error) {
	s := &Store{cfg: cfg, resumes: make(chan struct{}, MaxConcurrentResumes), name: strings.ToUpper(strings.ReplaceAll(cfg.Namespace, "-", "_")) + "_HISTORY"}
	perRoom := int64(-1)
	for _, r := range cfg.Rules {
		if r.Messages == 0 { // an age-only rule: no count limit for the stream
			s.maxKeep = 0
			break
		}
		s.maxKeep = max(s.maxKeep, r.Messages)
	}
	if s.maxKeep > 0 {
		perRoom = int64(s.maxKeep)
	}
	sc := jetstream.StreamConfig{
		Name:              s.name,
		Description:       "roomcast/pubsub room history",
		Subjects:          []string{cfg.Subjects.HistWildcard()},
		Storage:           jetstream.MemoryStorage,
		MaxBytes:          memoryBytes,
		MaxMsgsPerSubject: perRoom,
		Discard:           jetstream.DiscardOld,
		Replicas:          max(cfg.Replicas, 1),
		AllowDirect:       true,
		AllowMsgTTL:       true,
		RePublish:         &jetstream.RePublish{Source: cfg.Subjects.HistWildcard(), Destination: cfg.Subjects.LiveWildcard()},
	}
	if cfg.File {
		sc.Storage, sc.MaxBytes = jetstream.FileStorage, fileBytes
	}
	if cfg.MaxBytes > 0 {
		sc.MaxBytes = cfg.MaxBytes
	}
	var err error
	s.api = "$JS.API."
	if d := cfg.Domain; d != "" {
		s.api = "$JS." + d + ".API."
		s.js, err = jetstream.NewWithDomain(cfg.NC, d)
	} else {
		s.js, err = jetstream.New(cfg.NC)
	}
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startTimeout)
	// A request sent before there is a leader goes unanswered: short tries.
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Duration(try)*time.Second, 5*time.Second))
		if cfg.MaxBytesIsDefault {
			if old, err := s.js.Stream(ctx, s.name); err == nil {
				sc.MaxBytes = max(sc.MaxBytes, old.CachedInfo().Config.MaxBytes)
			}
		}
		s.stream, err = s.js.CreateOrUpdateStream(ctx, sc)
		cancel()
		if err == nil {
			return s, nil
		}
		if storeRefused(err) && (!starting(err) || time.Now().After(deadline)) {
			return nil, fmt.Errorf("%w: history stream: the NATS server cannot reserve %d MiB for history (%w): free space on its disk or lower the broker's history size (WithHistoryMaxBytes)",
				ErrStoreFailed, sc.MaxBytes>>20, err)
		}
		if !starting(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("history stream: %w", err)
		}
		cfg.Log.Info("pubsub: waiting for JetStream", "err", err)
		time.Sleep(100 * time.Millisecond)
	}
}

// starting reports whether err means "not available yet" rather than a
// configuration the server refuses.
func starting(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10005, 10008, 10023, 10076: // no peers yet, cluster unavailable, resources, not enabled yet
			return true
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrTimeout)
}

// Rule returns the rule of room, if any.
func (s *Store) Rule(room string) (Rule, bool) {
	if s == nil {
		return Rule{}, false
	}
	for _, r := range s.cfg.Rules {
		if ok, _ := path.Match(r.Pattern, room); ok {
			return r, true
		}
	}
	return Rule{}, false
}

// Replicated reports whether the stream has more than one replica: then a
// replica may answer a read before it has what its leader acknowledged.
func (s *Store) Replicated() bool { return s.cfg.Replicas > 1 }

// Last returns up to limit of the most recent stored messages of room,
// oldest first. It reads the room's whole retained history. With replicated
// history the replica that answers may lag (one just back from a
// partition): the read is repeated until it reaches where the stream's
// leader says the room ends, for up to a second.
func (s *Store) Last(ctx context.Context, room string, limit int) ([]Message, error) {
	if limit <= 0 {
		return nil, nil
	}
	var want uint64
	if s.Replicated() {
		err := s.retryTransient(ctx, func() (err error) { want, err = s.LeaderLast(ctx, room); return err })
		if err != nil {
			return nil, err
		}
	}
	for try := 0; ; try++ {
		var msgs []Message
		err := s.retryTransient(ctx, func() (err error) { msgs, err = s.last(ctx, room, limit); return err })
		if err != nil || want == 0 || (len(msgs) > 0 && msgs[len(msgs)-1].Seq >= want) || try >= maxBehindTries {
			return msgs, err
		}
		select {
		case <-time.After(behindWait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Store) last(ctx context.Context, room string, limit int) ([]Message, error) {
	ring := make([]Message, 0, limit)
	next := 0
	_, err := s.Read(ctx, s.cfg.Subjects.Hist(room), 0, 0, func(m Message) bool {
		if limit == 0 {
			return false
		}
		if len(ring) < limit {
			ring = append(ring, m)
			return true
		}
		ring[next] = m
		next = (next + 1) % limit
		return true
	})
	if err != nil {
		return nil, err
	}
	return append(ring[next:], ring[:next]...), nil
}

// ReadRoom calls fn with room's stored messages after position after, in
// order, until fn returns false: the fan-out engine's gap repair.
func (s *Store) ReadRoom(ctx context.Context, room string, after uint64, fn func(seq uint64, env wire.Envelope) bool) error {
	_, err := s.Read(ctx, s.cfg.Subjects.Hist(room), after, 0, func(m Message) bool {
		return fn(m.Seq, wire.Envelope{From: m.From, Data: m.Data})
	})
	return err
}

// One direct get request asks for at most batchSize messages and
// batchBytes bytes: a batch must never fill the server's outbound buffer
// for the broker's shared connection.
const (
	batchSize  = 1000
	batchBytes = 1 << 20
)

// requestTimeout bounds the answer to one batched read: a paced replay, or
// a reconnect storm queueing requests, may take long.
const requestTimeout = 30 * time.Second

// Read calls fn with every stored message matching filter (a room's
// subject, or a wildcard) after position after, in order, with batched
// direct gets, until fn returns false or, when limit > 0, limit messages
// were read. It returns the number of messages read.
func (s *Store) Read(ctx context.Context, filter string, after uint64, limit int, fn func(m Message) bool) (int, error) {
	nc := s.cfg.NC
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	apiSubj := s.api + "DIRECT.GET." + s.name
	read := 0
	for {
		batch := batchSize
		if limit > 0 {
			batch = min(batch, limit-read)
		}
		req, _ := json.Marshal(map[string]any{"seq": after + 1, "next_by_subj": filter, "batch": batch, "max_bytes": batchBytes})
		if err := nc.PublishRequest(apiSubj, inbox, req); err != nil {
			return read, err
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		more, err := func() (bool, error) {
			for {
				m, err := sub.NextMsgWithContext(rctx)
				if err != nil {
					return false, fmt.Errorf("reading history: %w", err)
				}
				switch status := m.Header.Get("Status"); status {
				case "404": // nothing (more) stored
					return false, nil
				case "204": // the end of a batch: more if some are still pending
					return m.Header.Get("Nats-Num-Pending") != "0", nil
				case "":
				case "503": // no responders: JetStream is restarting, or the stream has no leader
					return false, fmt.Errorf("reading history: %w", nats.ErrNoResponders)
				default:
					return false, fmt.Errorf("reading history: %s %s", status, m.Header.Get("Description"))
				}
				seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
				if seq <= after {
					return false, fmt.Errorf("reading history: position %d after %d", seq, after)
				}
				after = seq
				read++
				env, err := wire.ParseEnvelope(m.Data)
				if err != nil {
					s.cfg.Log.Warn("pubsub: skipping a malformed stored message", "seq", seq, "err", err)
					continue
				}
				ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
				if !fn(Message{Seq: seq, Subject: m.Header.Get(jetstream.SubjectHeader), From: env.From, Data: env.Data, Time: ts}) {
					return false, nil
				}
			}
		}()
		cancel()
		if err != nil || !more || (limit > 0 && read >= limit) {
			return read, err
		}
	}
}

// sizeEvery bounds how often Size asks JetStream: dashboards ask often.
const sizeEvery = 5 * time.Second

// Size returns the stream's messages and bytes, as JetStream said at most
// sizeEvery ago (a round trip, bounded by ctx, when older).
func (s *Store) Size(ctx context.Context) (msgs, bytes uint64, err error) {
	// Another caller is asking: its answer, or the last one, will do.
	if !s.sizeMu.TryLock() {
		return s.sizeMsgs.Load(), s.sizeBytes.Load(), nil
	}
	defer s.sizeMu.Unlock()
	if time.Since(s.sizeAt) < sizeEvery {
		return s.sizeMsgs.Load(), s.sizeBytes.Load(), nil
	}
	s.sizeAt = time.Now() // a failure is not retried at once either
	info, err := s.stream.Info(ctx)
	if err != nil {
		return s.sizeMsgs.Load(), s.sizeBytes.Load(), err
	}
	s.sizeMsgs.Store(info.State.Msgs)
	s.sizeBytes.Store(info.State.Bytes)
	return info.State.Msgs, info.State.Bytes, nil
}

// Ping asks JetStream for the stream: the store is reachable. A store that
// refuses writes is not fine either: Ping returns that (and tries to
// recover it, when it is due).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.Fault(); err != nil {
		s.tryRecover()
		if err := s.Fault(); err != nil {
			return err
		}
	}
	_, err := s.stream.Info(ctx)
	return err
}
