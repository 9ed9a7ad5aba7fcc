package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// GapAfter reports whether messages of room after position after may have
// been dropped from the store, and the store's last position. The common
// answers come from direct gets; stream info only for the rare rest.
//
// Retention keeps a suffix of every room. If the room's oldest retained
// message does not come right after what the client has, and a limit (the
// room's count or age, or the store's size) may have dropped messages, that
// is a gap. The check is conservative: it may say so when the dropped
// messages were all at or before the position.
func (s *Store) GapAfter(ctx context.Context, room string, after uint64) (gap bool, head uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // a reconnect storm queues these
	defer cancel()
	rule, _ := s.Rule(room)
	subj := s.cfg.Subjects.Hist(room)
	last, err := s.stream.GetLastMsgForSubject(ctx, s.cfg.Subjects.HistWildcard())
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return after > 0, 0, nil // an empty store: a position means it was reset
	case err != nil:
		return false, 0, err
	}
	head = last.Sequence
	if after > head {
		// The store was reset and positions restarted, or the replica that
		// answered is behind: the stream's leader knows which.
		info, err := s.stream.Info(ctx)
		if err != nil {
			return false, head, err
		}
		if head = info.State.LastSeq; after > head {
			return true, head, nil
		}
	}
	next, err := s.stream.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(subj))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, head, err
	}
	if err == nil && next.Sequence == after+1 {
		return false, head, nil // what the client has is followed by what is kept
	}
	oldest, err := s.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, head, err
	}
	if err == nil && oldest.Sequence <= after {
		return false, head, nil // the room's kept suffix starts at or before the position
	}
	// Nothing of the room is kept at or before the position: messages after
	// it may have been dropped, if a limit can have dropped any.
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return false, head, err
	}
	switch {
	case info.State.FirstSeq > after+1 && info.State.Bytes >= uint64(info.Config.MaxBytes)*9/10:
		return true, head, nil // the store is full: it drops its oldest, of any room
	case rule.Messages > 0 && info.State.Subjects[subj] >= uint64(rule.Messages):
		return true, head, nil // the room has reached its count
	case rule.MaxAge > 0 && !s.youngerThan(ctx, after, rule.MaxAge):
		return true, head, nil
	}
	return false, head, nil
}

// youngerThan reports whether the message at position seq is known to be
// younger than age: then no message after it can have expired.
func (s *Store) youngerThan(ctx context.Context, seq uint64, age time.Duration) bool {
	m, err := s.stream.GetMsg(ctx, seq)
	return err == nil && time.Since(m.Time) < age
}

// LeaderLast returns the position of room's last stored message as the
// history stream's leader has it (0 for none). Unlike a direct get, which
// any replica may answer, this is never behind what was acknowledged.
func (s *Store) LeaderLast(ctx context.Context, room string) (uint64, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": s.cfg.Subjects.Hist(room)})
	var m *nats.Msg
	var err error
	// While the stream elects a new leader requests go unanswered: short
	// tries, for up to 15 s.
	for try := 0; try < 15; try++ {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err = s.cfg.NC.RequestWithContext(rctx, s.api+"STREAM.MSG.GET."+s.name, req)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("reading history: %w", err)
	}
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return 0, fmt.Errorf("reading history: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return 0, nil
	case resp.Error != nil:
		return 0, fmt.Errorf("reading history: %w", resp.Error) // retryable() reads its code
	case resp.Message == nil:
		return 0, nil
	}
	return resp.Message.Seq, nil
}
