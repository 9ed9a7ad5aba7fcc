package pubsub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
)

func historyBroker(t *testing.T, opts ...Option) *Broker {
	return newBroker(t, append([]Option{
		WithHistory("chat:*", History{Messages: 100}),
		WithHistory("small:*", History{Messages: 3}),
		WithHistory("ttl:*", History{MaxAge: time.Second}),
		WithClientPublish(func(context.Context, string, string) error { return nil }),
	}, opts...)...)
}

func TestHistoryRoomsAreStoredAndIDsAreStorePositions(t *testing.T) {
	b := historyBroker(t)
	srv := serve(t, b, nil)
	ws := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"chat:1", "lobby"}})
	sse := dialSSE(t, srv, dialOpts{user: "u", rooms: []string{"chat:1"}})

	var ids []string
	for i := range 3 {
		ack, err := b.PublishAck(ctx, "chat:1", msg(fmt.Sprint("stored ", i)))
		if err != nil || !ack.Stored {
			t.Fatalf("PublishAck: %+v %v", ack, err)
		}
		ids = append(ids, ack.ID)
	}
	plain, err := b.PublishAck(ctx, "lobby", msg("plain"))
	if err != nil || plain.Stored {
		t.Fatalf("plain room: %+v %v", plain, err)
	}
	if _, err := strconv.ParseUint(plain.ID, 10, 64); err == nil {
		t.Fatalf("a plain room's id %q looks like a store position", plain.ID)
	}
	prev := uint64(0)
	for i, id := range ids {
		seq, err := strconv.ParseUint(id, 10, 64)
		if err != nil || seq <= prev {
			t.Fatalf("ids %q are not increasing store positions", ids)
		}
		prev = seq
		f := ws.next(t)
		if f.Room != "chat:1" || f.ID != id || f.Text() != fmt.Sprint("stored ", i) {
			t.Fatalf("ws got %+v, want id %s", f, id)
		}
		if e := sse.next(t); e.ID != id || e.SSEID != id {
			t.Fatalf("sse got id %q / event id %q, want %s", e.ID, e.SSEID, id)
		}
	}
	if f := ws.next(t); f.Room != "lobby" || f.ID != plain.ID {
		t.Fatalf("ws got %+v", f)
	}
	// A client publish to a history room is stored; its ack carries the id.
	// The stored message may reach subscribers before the ack reaches the
	// publisher: take both in either order.
	ws.send(t, map[string]any{"type": "publish", "room": "chat:1", "data": map[string]string{"text": "from client"}, "ref": 9})
	got := map[string]frame{}
	for range 2 {
		f := ws.next(t)
		got[f.Type] = f
	}
	if ack, m := got["published"], got["message"]; ack.ID == "" || m.ID != ack.ID || m.From != "u" {
		t.Fatalf("client publish: ack %+v, message %+v", ack, m)
	}
	// Only the history rooms' messages are in the store.
	info, err := historyStream(t, b).Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("the store holds %d messages, want 4", info.State.Msgs)
	}
}

func TestHistoryAPI(t *testing.T) {
	b := historyBroker(t)
	for i := range 10 {
		_ = b.Publish(ctx, "chat:a", msg(fmt.Sprint(i)))
		_ = b.Publish(ctx, "small:b", msg(fmt.Sprint(i)))
		_ = b.Publish(ctx, "chat:other", msg("other room"))
	}
	texts := func(ms []Message) (out []string) {
		for _, m := range ms {
			var d struct{ Text string }
			_ = json.Unmarshal(m.Data, &d)
			out = append(out, d.Text)
		}
		return out
	}
	got, err := b.History(ctx, "chat:a", 5)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(texts(got)) != "[5 6 7 8 9]" || got[0].Room != "chat:a" || got[0].Time.IsZero() {
		t.Fatalf("History(chat:a, 5) = %v %+v", texts(got), got[0])
	}
	// A room keeps its own limit, under the stream's larger one.
	if got, _ := b.History(ctx, "small:b", 100); fmt.Sprint(texts(got)) != "[7 8 9]" {
		t.Fatalf("History(small:b) = %v, want the last 3", texts(got))
	}
	if got, _ := b.History(ctx, "chat:a", 0); len(got) != 0 {
		t.Fatalf("limit 0 returned %d", len(got))
	}
	if _, err := b.History(ctx, "lobby", 5); !errors.Is(err, ErrNoHistory) {
		t.Fatalf("History(lobby) = %v", err)
	}
	for _, room := range hostileRooms {
		if _, err := b.History(ctx, room, 5); !errors.Is(err, ErrInvalidRoom) {
			t.Errorf("History(%q) = %v", truncate(room), err)
		}
	}
	if got, _ := b.History(ctx, "chat:empty", 5); len(got) != 0 {
		t.Fatalf("an empty room returned %d", len(got))
	}
}

func TestHistoryMaxAge(t *testing.T) {
	b := historyBroker(t)
	_ = b.Publish(ctx, "ttl:x", msg("short-lived"))
	if got, _ := b.History(ctx, "ttl:x", 10); len(got) != 1 {
		t.Fatalf("stored %d", len(got))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := b.History(ctx, "ttl:x", 10)
		if err == nil && len(got) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message still stored after its max age: %v %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestHistorySurvivesRestartWithFileStore(t *testing.T) {
	dir := t.TempDir()
	b, err := New(WithLogger(quietLogger()), WithHistory("*", History{Messages: 50}), WithStoreDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var last Ack
	for i := range 5 {
		if last, err = b.PublishAck(ctx, "room", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := newBroker(t, WithHistory("*", History{Messages: 50}), WithStoreDir(dir))
	got, err := b2.History(ctx, "room", 10)
	if err != nil || len(got) != 5 || got[4].ID != last.ID {
		t.Fatalf("after restart: %d messages, last id %v, want 5 and %s (%v)", len(got), got, last.ID, err)
	}
	next, err := b2.PublishAck(ctx, "room", msg("after"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := strconv.ParseUint(last.ID, 10, 64)
	n, _ := strconv.ParseUint(next.ID, 10, 64)
	if n != a+1 {
		t.Fatalf("ids went from %d to %d across the restart", a, n)
	}
}

func TestClientHistoryRequest(t *testing.T) {
	b := historyBroker(t, WithSubscribeAuth(func(ctx context.Context, user, room string) error {
		if room == "chat:secret" {
			return errors.New("no")
		}
		return nil
	}))
	for i := range 5 {
		_ = b.Publish(ctx, "chat:a", msg(fmt.Sprint(i)))
	}
	_ = b.Publish(ctx, "chat:secret", msg("secret"))
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{user: "u"})
	c.send(t, map[string]any{"type": "history", "room": "chat:a", "limit": 3, "ref": 1})
	_, p, err := c.Conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Type, Room string
		Ref        int
		Messages   []struct {
			ID, From, Time string
			Data           struct{ Text string }
		}
	}
	if err := json.Unmarshal(p, &h); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if h.Type != "history" || h.Room != "chat:a" || h.Ref != 1 || len(h.Messages) != 3 || h.Messages[0].Data.Text != "2" || h.Messages[2].ID == "" || h.Messages[0].Time == "" {
		t.Fatalf("history frame %s", p)
	}
	for _, tc := range []struct {
		frame map[string]any
		code  string
	}{
		{map[string]any{"type": "history", "room": "chat:secret"}, "forbidden"},
		{map[string]any{"type": "history", "room": "lobby"}, "no_history"},
		{map[string]any{"type": "history", "room": "a.b"}, "invalid_room"},
		{map[string]any{"type": "history", "room": "chat:a", "limit": 1000}, "bad_request"},
	} {
		if f := c.request(t, tc.frame); f.ErrorCode() != tc.code {
			t.Errorf("%v answered %+v, want %s", tc.frame, f, tc.code)
		}
	}
}

func TestHistoryOptionsAreValidated(t *testing.T) {
	for _, opt := range []Option{
		WithHistory("[", History{Messages: 1}),
		WithHistory("*", History{}),
		WithHistory("*", History{Messages: -1}),
		WithHistory("*", History{MaxAge: time.Millisecond}),
	} {
		if b, err := New(WithLogger(quietLogger()), opt); err == nil {
			b.Close()
			t.Errorf("accepted an invalid history option")
		}
	}
}

// Batches are bounded in bytes: large stored messages are all read, and the
// newest come back from History.
func TestHistoryWithLargeMessages(t *testing.T) {
	b := newBroker(t, WithHistory("*", History{Messages: 200}))
	pad := strings.Repeat("x", 60<<10)
	for i := range 150 {
		if err := b.Publish(ctx, "big", []byte(`{"text":"`+strconv.Itoa(i)+`","pad":"`+pad+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.History(ctx, "big", 3)
	if err != nil || len(got) != 3 || !strings.Contains(string(got[2].Data), `"text":"149"`) || !strings.Contains(string(got[0].Data), `"text":"147"`) {
		t.Fatalf("History: %d messages, %v", len(got), err)
	}
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{})
	first, _ := b.History(ctx, "big", 150) // under MaxHistoryLimit: all of them
	c.send(t, map[string]any{"type": "subscribe", "room": "big", "last_id": first[0].ID})
	c.next(t)
	for i := 1; i < 150; i++ {
		if f := c.next(t); f.Text() != strconv.Itoa(i) {
			t.Fatalf("replay %d: %q", i, f.Text())
		}
	}
}
