package pubsub_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

func TestAcceptCustomHandler(t *testing.T) {
	b := newBroker(t)
	ended := make(chan error, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := b.Accept(w, r)
		if err != nil {
			return
		}
		if err := c.Join("game:42"); err != nil {
			t.Errorf("Join: %v", err)
		}
		if err := c.Join("a.b"); !errors.Is(err, ErrInvalidRoom) {
			t.Errorf("Join(a.b) = %v", err)
		}
		if err := c.Send(r.Context(), []byte(`{"text":"hello `+c.User()+` over `+c.Transport()+`"}`)); err != nil {
			t.Errorf("Send: %v", err)
		}
		if err := c.Send(r.Context(), []byte(`nope`)); !errors.Is(err, ErrInvalidData) {
			t.Errorf("Send(invalid) = %v", err)
		}
		for m := range c.Messages() {
			if string(m) == `"bye"` {
				break
			}
			_ = c.Send(c.Context(), []byte(`{"text":"echo","got":`+string(m)+`}`))
		}
		ended <- c.Err()
	})
	srv := serve(t, b, h)

	ws := dialWS(t, srv, dialOpts{user: "ann"})
	if f := ws.next(t); f.Type != "subscribed" || f.Room != "game:42" {
		t.Fatalf("got %+v, want subscribed game:42", f)
	}
	if f := ws.next(t); f.Type != "direct" || f.To != "conn" || f.Text() != "hello ann over websocket" {
		t.Fatalf("got %+v", f)
	}
	ws.send(t, `{"type":"send","data":{"move":"e4"}}`)
	if f := ws.next(t); f.Text() != "echo" || !strings.Contains(string(f.Data), `"got":{"move":"e4"}`) {
		t.Fatalf("echo = %+v", f)
	}
	_ = b.Publish(ctx, "game:42", msg("move"))
	if f := ws.next(t); f.Room != "game:42" || f.Text() != "move" {
		t.Fatalf("room message = %+v", f)
	}

	sse := dialSSE(t, srv, dialOpts{user: "ben"})
	if f := sse.next(t); f.Type != "subscribed" || f.Room != "game:42" {
		t.Fatalf("got %+v", f)
	}
	if f := sse.next(t); f.Text() != "hello ben over sse" {
		t.Fatalf("got %+v", f)
	}
	_ = b.Publish(ctx, "game:42", msg("move 2"))
	for _, c := range []client{sse, ws} {
		if f := testkit.Next(t, c); f.Text() != "move 2" {
			t.Fatalf("got %+v", f)
		}
	}

	// Leaving the loop closes the connection normally.
	ws.send(t, `{"type":"send","data":"bye"}`)
	if _, err := ws.NextErr(waitFor); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after bye: %v", err)
	}
	if err := <-ended; err != nil {
		t.Fatalf("Err after a normal close = %v", err)
	}
}

func TestConnLimits(t *testing.T) {
	b := newBroker(t, WithMaxRooms(2))
	srv := serve(t, b, nil)
	c := dialWS(t, srv, dialOpts{rooms: []string{"a", "b"}})
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "c"}); f.ErrorCode() != "too_many_rooms" {
		t.Fatalf("third room answered %+v", f)
	}
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "a"}); f.Type != "subscribed" {
		t.Fatalf("joining a room twice answered %+v", f)
	}
	if _, resp, err := dialSSEErr(srv, dialOpts{rooms: []string{"a", "b", "c"}}); err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("three query rooms: %v", err)
	}
}

func TestConcurrentJoinLeaveAndPublish(t *testing.T) {
	b := newBroker(t)
	ready := make(chan *Conn, 8)
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := b.Accept(w, r)
		if err == nil {
			ready <- c
			_ = c.Wait()
		}
	}))
	var clients []*wsClient
	for range 8 {
		c, _, err := dialWSErr(srv, dialOpts{})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		go func() { // drain
			for {
				if _, err := c.NextErr(time.Minute); err != nil {
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for range 8 {
		c := <-ready
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				room := fmt.Sprint("r", i%7)
				_ = c.Join(room)
				_ = b.Publish(ctx, room, msg("x"))
				_ = c.Leave(room)
			}
		}()
	}
	wg.Wait()
	for _, c := range clients {
		_ = c.Conn.Close(websocket.StatusNormalClosure, "")
	}
	eventually(t, "all topics released", func() bool { return TopicCount(b) == 0 && ConnCount(b) == 0 })
}

// A leave racing a rejoin of the same room leaves the connection either in
// the room (it gets the room's messages) or out of it (it gets none), never
// in the room but deaf to it.
func TestLeaveRacingRejoin(t *testing.T) {
	b := newBroker(t)
	conns := make(chan *Conn, 1)
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := b.Accept(w, r)
		if err != nil {
			return
		}
		conns <- c
		_ = c.Wait()
	}))
	ws := dialWS(t, srv, dialOpts{user: "u"})
	c := <-conns
	for i := range 300 {
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 10 {
				_ = c.Join("r")
			}
		})
		wg.Go(func() {
			for range 10 {
				_ = c.Leave("r")
			}
		})
		wg.Wait()
		in := slices.Contains(c.Rooms(), "r")
		if err := b.Publish(ctx, "r", msg(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		sendMarker(t, b, ws, "end")
		received := false
		for _, f := range collect(t, ws, "end") {
			received = received || f.Type == "message" && f.Text() == fmt.Sprint(i)
		}
		if received != in {
			t.Fatalf("round %d: in the room %v, received its message %v", i, in, received)
		}
	}
}
