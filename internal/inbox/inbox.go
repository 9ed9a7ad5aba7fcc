// Package inbox keeps per-user messages that outlive the user being
// offline, on one JetStream stream (whatever NATS the broker uses): one
// subject per user, at most Messages per user (the oldest dropped), each
// for at most MaxAge. Reading a user's inbox starts after a position;
// acknowledging purges the user's messages up to a position, for every
// connection of the user. Every stored message is republished, headers
// only, on the user's live subject: the instances' cue to read.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/subject"
)

// Config opens a Store.
type Config struct {
	NC        *nats.Conn
	Subjects  subject.Space
	Namespace string
	Messages  int           // per user; 0: no count limit
	MaxAge    time.Duration // 0: no age limit
	File      bool          // file storage (memory otherwise)
	Replicas  int
	Domain    string
}

// Message is one stored inbox message.
type Message struct {
	Seq  uint64
	Data []byte
	Time time.Time
}

// Store is the inbox stream.
type Store struct {
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream
}

// Open creates or updates the inbox stream.
func Open(cfg Config) (*Store, error) {
	s := &Store{cfg: cfg}
	var err error
	if cfg.Domain != "" {
		s.js, err = jetstream.NewWithDomain(cfg.NC, cfg.Domain)
	} else {
		s.js, err = jetstream.New(cfg.NC)
	}
	if err != nil {
		return nil, err
	}
	sc := jetstream.StreamConfig{
		Name:              strings.ToUpper(strings.ReplaceAll(cfg.Namespace, "-", "_")) + "_INBOX",
		Description:       "roomcast/pubsub per-user inboxes",
		Subjects:          []string{cfg.Subjects.InboxWildcard()},
		Storage:           jetstream.MemoryStorage,
		MaxBytes:          256 << 20,
		MaxMsgsPerSubject: int64(cfg.Messages),
		MaxAge:            cfg.MaxAge,
		Discard:           jetstream.DiscardOld,
		Replicas:          max(cfg.Replicas, 1),
		AllowDirect:       true,
		RePublish:         &jetstream.RePublish{Source: cfg.Subjects.InboxWildcard(), Destination: cfg.Subjects.InboxLiveWildcard(), HeadersOnly: true},
	}
	if cfg.Messages == 0 {
		sc.MaxMsgsPerSubject = -1
	}
	if cfg.File {
		sc.Storage, sc.MaxBytes = jetstream.FileStorage, 1<<30
	}
	deadline := time.Now().Add(30 * time.Second)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Duration(try)*time.Second, 5*time.Second))
		s.stream, err = s.js.CreateOrUpdateStream(ctx, sc)
		cancel()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("inbox stream: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Send stores data in user's inbox and returns its position. msgID makes a
// retry store it once (JetStream's duplicate window); transient failures
// are retried within ctx.
func (s *Store) Send(ctx context.Context, user, msgID string, data []byte) (uint64, error) {
	m := nats.NewMsg(s.cfg.Subjects.Inbox(user))
	m.Data = data
	m.Header.Set(nats.MsgIdHdr, msgID)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		ack, err := s.js.PublishMsg(ctx, m)
		if err == nil {
			return ack.Sequence, nil
		}
		if !transient(err) || ctx.Err() != nil {
			return 0, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, err
		}
	}
}

func transient(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || strings.Contains(err.Error(), "temporarily unavailable")
}

// Read returns user's messages after position after, oldest first.
func (s *Store) Read(ctx context.Context, user string, after uint64) ([]Message, error) {
	subj := s.cfg.Subjects.Inbox(user)
	var out []Message
	for seq := after + 1; ; {
		m, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, Message{Seq: m.Sequence, Data: m.Data, Time: m.Time})
		seq = m.Sequence + 1
		if s.cfg.Messages > 0 && len(out) > s.cfg.Messages+1 {
			return out, nil // stored faster than read: the rest on the next cue
		}
	}
}

// Ack removes user's messages up to and including position upTo: read,
// for every connection of the user. Always by position (never "the whole
// subject": a message stored meanwhile must stay), and never past the
// stream's end: nats-server walks the positions up to the one given.
func (s *Store) Ack(ctx context.Context, user string, upTo uint64) error {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return err
	}
	return s.stream.Purge(ctx, jetstream.WithPurgeSubject(s.cfg.Subjects.Inbox(user)), jetstream.WithPurgeSequence(min(upTo, info.State.LastSeq)+1))
}

// Limit is the per-user limit (0: none).
func (s *Store) Limit() int { return s.cfg.Messages }

// Seq is the stream position a republished cue names.
func Seq(m *nats.Msg) uint64 {
	n, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	return n
}
