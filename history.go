package pubsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/pubsub/internal/subject"
	"github.com/roomcast/pubsub/internal/wire"
)

// History is how much of a room's past the broker keeps. At least one
// limit must be set: nothing is kept forever.
type History struct {
	Messages int           // keep the room's last Messages messages (0: no count limit)
	MaxAge   time.Duration // drop messages older than MaxAge (0: no age limit)
}

// Message is a stored message of a room with history.
type Message struct {
	ID   string          // the id clients saw it with: its position in the store
	Room string          //
	From string          // the publishing client's user, "" for server code
	Data json.RawMessage //
	Time time.Time       // when it was stored
}

// Ack reports a published message.
type Ack struct {
	ID     string // the id subscribers receive the message with
	Stored bool   // the room has history: the message is stored
}

// ErrNoHistory: the room has no history configured.
var ErrNoHistory = errors.New("pubsub: room has no history")

// MaxHistoryLimit bounds one History call and one client "history" request.
const MaxHistoryLimit = 1000

// WithHistory keeps history for the rooms whose names match pattern
// (path.Match syntax: "chat:*"; "*" is every room). Repeat it for several
// patterns; the first that matches a room decides. History lives in
// JetStream on the broker's NATS (enabled on the embedded server; an
// external server must have JetStream), in one stream for all rooms. Rooms
// without history keep the plain path, with no JetStream cost.
func WithHistory(pattern string, h History) Option {
	return func(c *config) { c.history = append(c.history, historyRule{pattern, h}) }
}

// WithStoreDir keeps history in files under dir, so it survives restarts
// (embedded server). Without it, history is in memory. With an external
// NATS server history always uses file storage.
func WithStoreDir(dir string) Option { return func(c *config) { c.storeDir = dir } }

// WithHistoryReplicas keeps history on n JetStream nodes (1, 3 or 5), so
// it survives the loss of a node: the stream is replicated with Raft, and a
// publish returns once a majority has stored it. The NATS cluster (embedded
// nodes with JetStream, or the external cluster) must have n JetStream
// nodes. Default 1.
func WithHistoryReplicas(n int) Option { return func(c *config) { c.historyReplicas = n } }

// WithJetStreamDomain names the JetStream domain that keeps history. Needed
// when instances are leaf nodes of a NATS system that runs JetStream (the
// leaf topology): give the hub's JetStream a domain (jetstream { domain:
// hub }) and pass it here, so that every instance's history requests cross
// the leaf connection to the one shared store.
func WithJetStreamDomain(domain string) Option { return func(c *config) { c.jsDomain = domain } }

type historyRule struct {
	pattern string
	h       History
}

// Limits of the history stream.
const (
	historyMemoryBytes = 256 << 20
	historyFileBytes   = 1 << 30
)

// historyStore is the broker's JetStream side.
type historyStore struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	name    string
	maxKeep int    // the stream's per-room count limit, the largest of the rules
	api     string // "$JS.API." or "$JS.<domain>.API."
}

func validateHistory(rules []historyRule) error {
	for _, r := range rules {
		if _, err := path.Match(r.pattern, ""); err != nil {
			return fmt.Errorf("pubsub: history pattern %q: %w", r.pattern, err)
		}
		if r.h.Messages < 0 || r.h.MaxAge < 0 || (r.h.Messages == 0 && r.h.MaxAge == 0) {
			return fmt.Errorf("pubsub: history for %q needs a positive Messages or MaxAge", r.pattern)
		}
		if r.h.MaxAge > 0 && r.h.MaxAge < time.Second {
			return fmt.Errorf("pubsub: history MaxAge for %q is under a second", r.pattern)
		}
	}
	return nil
}

// openHistory creates or updates the one stream that holds every room's
// history. Once stored, the stream republishes each message, with its
// sequence in the headers, on the room's live subject: subscribers get
// messages in store order, with their store position as id.
func (b *Broker) openHistory(file bool) error {
	hs := &historyStore{name: strings.ToUpper(strings.ReplaceAll(b.cfg.namespace, "-", "_")) + "_HISTORY"}
	perRoom := int64(-1)
	for _, r := range b.cfg.history {
		if r.h.Messages == 0 { // an age-only rule: no count limit for the stream
			hs.maxKeep = 0
			break
		}
		hs.maxKeep = max(hs.maxKeep, r.h.Messages)
	}
	if hs.maxKeep > 0 {
		perRoom = int64(hs.maxKeep)
	}
	cfg := jetstream.StreamConfig{
		Name:              hs.name,
		Description:       "roomcast/pubsub room history",
		Subjects:          []string{b.subjects.HistWildcard()},
		Storage:           jetstream.MemoryStorage,
		MaxBytes:          historyMemoryBytes,
		MaxMsgsPerSubject: perRoom,
		Discard:           jetstream.DiscardOld,
		Replicas:          max(b.cfg.historyReplicas, 1),
		AllowDirect:       true,
		AllowMsgTTL:       true,
		RePublish:         &jetstream.RePublish{Source: b.subjects.HistWildcard(), Destination: b.subjects.LiveWildcard()},
	}
	if file {
		cfg.Storage, cfg.MaxBytes = jetstream.FileStorage, historyFileBytes
	}
	var err error
	hs.api = "$JS.API."
	if d := b.cfg.jsDomain; d != "" {
		hs.api = "$JS." + d + ".API."
		hs.js, err = jetstream.NewWithDomain(b.nc, d)
	} else {
		hs.js, err = jetstream.New(b.nc)
	}
	if err != nil {
		return err
	}
	// A JetStream cluster answers once its nodes have elected a leader,
	// which takes a quorum of them: instances that start together wait for
	// each other here.
	deadline := time.Now().Add(historyStartTimeout)
	// A request sent before there is a leader goes unanswered: short tries.
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Duration(try)*time.Second, 5*time.Second))
		hs.stream, err = hs.js.CreateOrUpdateStream(ctx, cfg)
		cancel()
		if err == nil {
			b.hist = hs
			return nil
		}
		if !jetStreamStarting(err) || time.Now().After(deadline) {
			return fmt.Errorf("history stream: %w", err)
		}
		b.log.Info("pubsub: waiting for JetStream", "err", err)
		time.Sleep(100 * time.Millisecond)
	}
}

// historyStartTimeout bounds New's wait for a JetStream cluster to form.
const historyStartTimeout = time.Minute

// jetStreamStarting reports whether err means "not available yet" rather
// than a configuration the server refuses.
func jetStreamStarting(err error) bool {
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

// historyFor returns the history rule of room, if any.
func (b *Broker) historyFor(room string) (History, bool) {
	if b.hist == nil {
		return History{}, false
	}
	for _, r := range b.cfg.history {
		if ok, _ := path.Match(r.pattern, room); ok {
			return r.h, true
		}
	}
	return History{}, false
}

// roomSubject is the subject subscribers of room listen on.
func (b *Broker) roomSubject(room string) string {
	if _, ok := b.historyFor(room); ok {
		return b.subjects.Live(room)
	}
	return b.subjects.Room(room)
}

// publishRoom publishes to a validated room: stored first for a room with
// history, straight to subscribers otherwise.
func (b *Broker) publishRoom(ctx context.Context, room, from string, data []byte) (Ack, error) {
	h, ok := b.historyFor(room)
	if !ok {
		id, err := b.send(ctx, b.subjects.Room(room), from, data)
		return Ack{ID: id}, err
	}
	if err := ctx.Err(); err != nil {
		return Ack{}, err
	}
	data, err := b.checkData(data)
	if err != nil {
		return Ack{}, err
	}
	subj := b.subjects.Hist(room)
	var opts []jetstream.PublishOpt
	if h.MaxAge > 0 {
		opts = append(opts, jetstream.WithMsgTTL(h.MaxAge))
	}
	// The id is the store position, known once stored: the payload has none.
	pub, err := b.hist.js.Publish(ctx, subj, wire.AppendEnvelope(nil, wire.Envelope{From: from, Data: data}), opts...)
	if err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return Ack{}, ErrClosed
		}
		return Ack{}, fmt.Errorf("pubsub: storing: %w", err)
	}
	if h.Messages > 0 && (b.hist.maxKeep == 0 || h.Messages < b.hist.maxKeep) {
		// The stream keeps maxKeep per room; this room keeps fewer.
		if err := b.hist.stream.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeKeep(uint64(h.Messages))); err != nil {
			b.log.Warn("pubsub: trimming history", "room", room, "err", err)
		}
	}
	return Ack{ID: strconv.FormatUint(pub.Sequence, 10), Stored: true}, nil
}

// PublishAck is Publish reporting the message's id. For a room with
// history it returns once the message is stored, so an HTTP handler can
// tell its caller the message is durable.
func (b *Broker) PublishAck(ctx context.Context, room string, data []byte) (Ack, error) {
	if err := subject.ValidRoom(room); err != nil {
		return Ack{}, fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	return b.publishRoom(ctx, room, "", data)
}

// History returns up to limit (at most MaxHistoryLimit) of the most recent
// stored messages of room, oldest first. It reads the room's whole retained
// history, so its cost grows with the room's limits. Authorize callers as
// for a subscription: clients asking through the protocol are checked with
// the subscribe hook.
func (b *Broker) History(ctx context.Context, room string, limit int) ([]Message, error) {
	if err := subject.ValidRoom(room); err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidRoom, truncate(room), err)
	}
	if _, ok := b.historyFor(room); !ok {
		return nil, ErrNoHistory
	}
	limit = min(max(limit, 0), MaxHistoryLimit)
	ring := make([]Message, 0, limit)
	next := 0
	_, err := b.readStoredRaw(ctx, b.subjects.Hist(room), 0, 0, func(_ string, m Message) bool {
		m.Room = room
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

// One direct get request asks for at most storedBatch messages and
// storedBatchBytes bytes: a batch must never fill the server's outbound
// buffer for the broker's shared connection.
const (
	storedBatch      = 1000
	storedBatchBytes = 1 << 20
)

// readStoredRaw calls fn with every stored message matching filter (a
// subject, or a wildcard) after position after, in order, with batched
// direct gets, until fn returns false or, when limit > 0, limit messages
// were read. It returns the number of messages read.
func (b *Broker) readStoredRaw(ctx context.Context, filter string, after uint64, limit int, fn func(subj string, m Message) bool) (int, error) {
	inbox := b.nc.NewRespInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	apiSubj := b.hist.api + "DIRECT.GET." + b.hist.name
	read := 0
	for {
		batch := storedBatch
		if limit > 0 {
			batch = min(batch, limit-read)
		}
		req, _ := json.Marshal(map[string]any{"seq": after + 1, "next_by_subj": filter, "batch": batch, "max_bytes": storedBatchBytes})
		if err := b.nc.PublishRequest(apiSubj, inbox, req); err != nil {
			return read, err
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second) // per request: a paced replay, or a reconnect storm queueing requests, may take long
		more, err := func() (bool, error) {
			for {
				m, err := sub.NextMsgWithContext(rctx)
				if err != nil {
					return false, fmt.Errorf("pubsub: reading history: %w", err)
				}
				switch status := m.Header.Get("Status"); status {
				case "404": // nothing (more) stored
					return false, nil
				case "204": // the end of a batch: more if some are still pending
					return m.Header.Get("Nats-Num-Pending") != "0", nil
				case "":
				default:
					return false, fmt.Errorf("pubsub: reading history: %s %s", status, m.Header.Get("Description"))
				}
				seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
				if seq <= after {
					return false, fmt.Errorf("pubsub: reading history: position %d after %d", seq, after)
				}
				after = seq
				read++
				env, err := wire.ParseEnvelope(m.Data)
				if err != nil {
					b.log.Warn("pubsub: skipping a malformed stored message", "seq", seq, "err", err)
					continue
				}
				ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
				if !fn(m.Header.Get(jetstream.SubjectHeader), Message{ID: strconv.FormatUint(seq, 10), From: env.From, Data: env.Data, Time: ts}) {
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

// repair delivers, from the store, the messages of t's room that the live
// stream skipped up to position upto: a republished message names its
// room's previous one, so a message lost between nodes (the stream's
// leader died after storing it, or NATS dropped it) is seen as a gap. It
// runs on the dispatcher, which waits: this happens only on failures. A
// replica that answers may not have the messages yet, so it reads again a
// few times before giving up.
func (b *Broker) repair(t *topic, upto uint64, slow []*Conn) []*Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if len(t.repaired) > 4096 { // live copies that never came: forget them
		clear(t.repaired)
	}
	current := false // the store has what came after: the rest is gone
	for try := 0; t.lastSeq < upto && !current && try < 8; try++ {
		if try > 0 {
			time.Sleep(25 * time.Millisecond)
		}
		_, err := b.readStoredRaw(ctx, b.subjects.Hist(t.name), t.lastSeq, 0, func(_ string, m Message) bool {
			seq, _ := strconv.ParseUint(m.ID, 10, 64)
			if seq > upto {
				current = true
				return false
			}
			f := wire.MessageFrame(wire.KindRoom, t.name, wire.Envelope{ID: m.ID, From: m.From, Data: m.Data})
			f.Stored, f.Prev = true, t.lastSeq
			slow = t.fanout(f, slow)
			t.lastSeq = seq
			if t.repaired == nil {
				t.repaired = make(map[uint64]struct{})
			}
			t.repaired[seq] = struct{}{}
			return seq < upto
		})
		if err != nil {
			b.log.Warn("pubsub: reading skipped messages", "room", t.name, "err", err)
			break
		}
	}
	if t.lastSeq < upto {
		b.log.Warn("pubsub: live messages skipped and not found in the store", "room", t.name, "after", t.lastSeq, "upto", upto)
		t.lastSeq = upto
	}
	b.log.Info("pubsub: filled a gap in a room's live messages", "room", t.name, "upto", upto)
	return slow
}
