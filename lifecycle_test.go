package pubsub

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/roomcast/pubsub/embedded"
)

// A client that stops reading is disconnected with 4001 once its queue
// overflows, while a fast client in the same room receives everything.
func TestSlowClientIsDisconnectedAndNeverDelaysOthers(t *testing.T) {
	// The write in flight to the slow client blocks until it reads again; a
	// long write timeout keeps that from cutting the socket before the close
	// frame (4001) gets through on a loaded machine.
	b := newBroker(t, WithSendQueue(128, 16<<20), WithWriteTimeout(2*time.Minute))
	ended := make(chan error, 4)
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := b.Accept(w, r); err == nil {
			ended <- c.Wait()
		}
	}))
	fast := dialWS(t, srv, dialOpts{user: "fast", rooms: []string{"r"}})
	slow := dialWS(t, srv, dialOpts{user: "slow", rooms: []string{"r"}})
	slowSSE, err := http.NewRequest(http.MethodGet, liveURL(srv, "http", []string{"r"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	slowSSE.Header.Set("Accept", "text/event-stream")
	sseResp, err := srv.Client().Do(slowSSE)
	if err != nil {
		t.Fatal(err)
	}
	defer sseResp.Body.Close()

	// Enough bytes to fill the loopback socket buffers many times over,
	// published no faster than the fast client reads (at most `window`
	// ahead), so only the slow client's queue can overflow.
	const n, size, window = 1000, 32 << 10, 32
	payload := strings.Repeat("x", size)
	received := make(chan int, n)
	go func() {
		read := 0
		for i := range n {
			for ; i-read > window; read++ {
				if _, ok := <-received; !ok {
					return
				}
			}
			_ = b.Publish(ctx, "r", []byte(fmt.Sprintf(`{"text":"%d","pad":"%s"}`, i, payload)))
		}
	}()
	for i := range n {
		f, err := fast.nextErr(20 * time.Second)
		if err != nil {
			close(received)
			t.Fatalf("fast client, message %d: %v", i, err)
		}
		if f.text() != fmt.Sprint(i) {
			close(received)
			t.Fatalf("fast client: message %d is %q", i, f.text())
		}
		received <- i
	}
	// The slow client now reads: an in-order prefix of the messages, then 4001.
	next := 0
	for {
		f, err := slow.nextErr(10 * time.Second)
		if err != nil {
			if code := websocket.CloseStatus(err); code != CloseSlowConsumer {
				t.Fatalf("slow client ended with %v (code %d), want %d", err, code, CloseSlowConsumer)
			}
			break
		}
		if f.text() != fmt.Sprint(next) {
			t.Fatalf("slow client: got %q, want %d", f.text(), next)
		}
		next++
	}
	if next >= n {
		t.Fatalf("slow client got all %d messages: it was never slow", next)
	}
	// The slow SSE stream ends with a close event carrying the same code.
	sc := bufio.NewScanner(sseResp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last string
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			last = sc.Text()
		}
	}
	if !strings.Contains(last, `"type":"close","code":4001`) {
		t.Fatalf("slow SSE stream ended with %q", last)
	}
	// Server side, both slow connections ended as slow consumers.
	for range 2 {
		select {
		case err := <-ended:
			if !errors.Is(err, ErrSlowConsumer) {
				t.Fatalf("a slow connection ended with %v, want ErrSlowConsumer", err)
			}
		case <-time.After(waitFor):
			t.Fatal("slow connections did not end")
		}
	}
	eventually(t, "slow connections to be released", func() bool {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return len(b.conns) == 1
	})
}

// Goroutines return to their baseline once connections close, an idle
// connection holds no writer goroutine, and room subscriptions are released.
func TestGoroutinesAndSubscriptionsReturnToBaseline(t *testing.T) {
	// A hijacked SSE stream learns that its client left at the next
	// keep-alive check.
	b := newBroker(t, WithKeepAlive(100*time.Millisecond, time.Second))
	srv := serve(t, b, nil)
	warm := dialWS(t, srv, dialOpts{user: "warm", rooms: []string{"r"}})
	_ = warm.c.Close(websocket.StatusNormalClosure, "")
	eventually(t, "warm-up connection to close", func() bool { b.mu.RLock(); defer b.mu.RUnlock(); return len(b.conns) == 0 })
	if err := b.nc.Flush(); err != nil { // the server has processed the UNSUBs
		t.Fatal(err)
	}
	baseSubs := b.srv.NATS().NumSubscriptions()
	base := runtime.NumGoroutine()

	const n = 20
	var wsc []*wsClient
	var ssec []*sseClient
	for i := range n {
		wsc = append(wsc, dialWS(t, srv, dialOpts{user: fmt.Sprint("w", i%5), rooms: []string{"r", fmt.Sprint("room", i)}}))
		ssec = append(ssec, dialSSE(t, srv, dialOpts{user: fmt.Sprint("s", i%5), rooms: []string{"r"}}))
	}
	_ = b.Publish(ctx, "r", msg("to all"))
	for _, c := range wsc {
		if f := c.next(t); f.text() != "to all" {
			t.Fatalf("got %+v", f)
		}
	}
	for _, c := range ssec {
		if f := c.next(t); f.text() != "to all" {
			t.Fatalf("got %+v", f)
		}
	}
	// Idle: a WebSocket holds one goroutine, its reader; a (hijacked) SSE
	// stream none; no writer goroutine is left.
	eventually(t, "idle connections to hold no writer", func() bool {
		return goroutinesIn("pubsub.(*Conn).readLoop") == n && goroutinesIn("pubsub.(*sseStream).writeLoop") == 0 &&
			goroutinesIn("pubsub.(*Conn).writeLoop") == 0
	})
	// 1 room "r", 20 rooms "roomN", 10 users.
	if got := b.srv.NATS().NumSubscriptions() - baseSubs; got != 31 {
		t.Fatalf("NATS subscriptions: %d more than baseline, want 31 (one per room and user)", got)
	}

	for _, c := range wsc {
		_ = c.c.Close(websocket.StatusNormalClosure, "bye")
	}
	for _, c := range ssec {
		c.close()
	}
	eventually(t, "goroutines to return to baseline", func() bool { return runtime.NumGoroutine() <= base })
	eventually(t, "subscriptions to return to baseline", func() bool { return b.srv.NATS().NumSubscriptions() == baseSubs })
	b.mu.RLock()
	defer b.mu.RUnlock()
	if len(b.topics) != 0 || len(b.conns) != 0 {
		t.Fatalf("%d topics and %d connections left", len(b.topics), len(b.conns))
	}
}

func TestShutdownDrainsAndTellsClientsToReconnect(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b, err := New(WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/live", testAuth(b.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ws := dialWS(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
	sse := dialSSE(t, srv, dialOpts{user: "u", rooms: []string{"r"}})
	for i := range 100 {
		_ = b.Publish(ctx, "r", msg(fmt.Sprint(i)))
	}
	// Wait until the broker has queued them, then shut down: all 100 must
	// still be delivered, then the close.
	b.mu.RLock()
	top := b.topics[b.subjects.Room("r")]
	b.mu.RUnlock()
	eventually(t, "messages to be dispatched", func() bool {
		n, _ := top.sub.Delivered()
		return n >= 100 && len(b.inbox) == 0 // received from NATS, and fanned out
	})
	time.Sleep(10 * time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- b.Shutdown(sctx) }()

	for i := range 100 {
		if f := ws.next(t); f.text() != fmt.Sprint(i) {
			t.Fatalf("ws message %d = %+v", i, f)
		}
		if f := sse.next(t); f.text() != fmt.Sprint(i) {
			t.Fatalf("sse message %d = %+v", i, f)
		}
	}
	if _, err := ws.nextErr(waitFor); websocket.CloseStatus(err) != CloseServiceRestart {
		t.Fatalf("WebSocket ended with %v, want close %d", err, CloseServiceRestart)
	}
	if f := sse.next(t); f.Type != "close" || string(f.Code) != "1012" {
		t.Fatalf("SSE last event = %+v, want close 1012", f)
	}
	if _, err := sse.nextErr(waitFor); err == nil {
		t.Fatal("SSE stream did not end")
	}
	if err := <-shutdownErr; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := b.Publish(ctx, "r", msg("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Shutdown = %v", err)
	}
	if _, resp, err := dialSSEErr(srv, dialOpts{}); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connect after Shutdown: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_ = ws.c.CloseNow()
	sse.close()
	srv.Close()
}

// A Shutdown whose context ends first still closes every connection and
// returns, with the context's error.
func TestShutdownTimeoutForcesConnectionsClosed(t *testing.T) {
	b, err := New(WithLogger(quietLogger()), WithSendQueue(4096, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, b, nil)
	stuck := dialWS(t, srv, dialOpts{rooms: []string{"r"}}) // never reads again
	big := []byte(`"` + strings.Repeat("x", 60<<10) + `"`)
	for range 300 {
		_ = b.Publish(ctx, "r", big)
	}
	b.mu.RLock()
	top := b.topics[b.subjects.Room("r")]
	b.mu.RUnlock()
	eventually(t, "messages to be dispatched", func() bool {
		n, _ := top.sub.Delivered()
		return n >= 100 && len(b.inbox) == 0 // received from NATS, and fanned out
	})
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := b.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v after its deadline", d)
	}
	_ = stuck.c.CloseNow()
}

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
	if f := ws.next(t); f.Type != "direct" || f.To != "conn" || f.text() != "hello ann over websocket" {
		t.Fatalf("got %+v", f)
	}
	ws.send(t, `{"type":"send","data":{"move":"e4"}}`)
	if f := ws.next(t); f.text() != "echo" || !strings.Contains(string(f.Data), `"got":{"move":"e4"}`) {
		t.Fatalf("echo = %+v", f)
	}
	_ = b.Publish(ctx, "game:42", msg("move"))
	if f := ws.next(t); f.Room != "game:42" || f.text() != "move" {
		t.Fatalf("room message = %+v", f)
	}

	sse := dialSSE(t, srv, dialOpts{user: "ben"})
	if f := sse.next(t); f.Type != "subscribed" || f.Room != "game:42" {
		t.Fatalf("got %+v", f)
	}
	if f := sse.next(t); f.text() != "hello ben over sse" {
		t.Fatalf("got %+v", f)
	}
	_ = b.Publish(ctx, "game:42", msg("move 2"))
	for _, c := range []client{sse, ws} {
		if f := c.next(t); f.text() != "move 2" {
			t.Fatalf("got %+v", f)
		}
	}

	// Leaving the loop closes the connection normally.
	ws.send(t, `{"type":"send","data":"bye"}`)
	if _, err := ws.nextErr(waitFor); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
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
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "c"}); f.code() != "too_many_rooms" {
		t.Fatalf("third room answered %+v", f)
	}
	if f := c.request(t, map[string]any{"type": "subscribe", "room": "a"}); f.Type != "subscribed" {
		t.Fatalf("joining a room twice answered %+v", f)
	}
	if _, resp, err := dialSSEErr(srv, dialOpts{rooms: []string{"a", "b", "c"}}); err == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("three query rooms: %v", err)
	}
}

func TestKeepAlive(t *testing.T) {
	b := newBroker(t, WithKeepAlive(50*time.Millisecond, time.Second)) // a generous pong wait: CI machines stall
	ended := make(chan error, 4)
	srv := serve(t, b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := b.Accept(w, r)
		if err == nil {
			ended <- c.Wait()
		}
	}))
	// A client that answers pings (its reader is running) stays connected.
	alive := dialWS(t, srv, dialOpts{rooms: []string{"r"}})
	frames := make(chan frame, 1)
	go func() {
		f, _ := alive.nextErr(2 * time.Second)
		frames <- f
	}()
	time.Sleep(400 * time.Millisecond) // several keep-alive rounds
	_ = b.Publish(ctx, "r", msg("still there"))
	if f := <-frames; f.text() != "still there" {
		t.Fatalf("live client got %+v", f)
	}

	// A client that never reads never answers a ping: closed with ErrIdleTimeout.
	silent, _, err := dialWSErr(srv, dialOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.c.CloseNow()
	select {
	case err := <-ended:
		if !errors.Is(err, ErrIdleTimeout) {
			t.Fatalf("silent client ended with %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("silent client was not closed")
	}

	// SSE: comment lines keep the stream open.
	sse := dialSSE(t, srv, dialOpts{})
	eventually(t, "an SSE keep-alive comment", func() bool { return strings.Contains(sse.rawText(), "\n:\n") })
}

// Several brokers on one NATS server behave as one: the scale-out path,
// with one broker dialing a URL and another on a connection of the host's.
func TestBrokersShareOneNATS(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if ns.ClientURL() == "" {
		t.Fatal("no client URL")
	}
	b1 := newBroker(t, WithNATSURL(ns.ClientURL()))
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b2 := newBroker(t, WithNATSConn(nc))
	other := newBroker(t, WithNATSURL(ns.ClientURL()), WithNamespace("otherapp"))
	srv1, srv2, srv3 := serve(t, b1, nil), serve(t, b2, nil), serve(t, other, nil)

	on1 := dialWS(t, srv1, dialOpts{user: "alice", rooms: []string{"lobby"}})
	on2 := dialSSE(t, srv2, dialOpts{user: "alice", rooms: []string{"lobby"}})
	bob2 := dialWS(t, srv2, dialOpts{user: "bob", rooms: []string{"lobby"}})
	foreign := dialWS(t, srv3, dialOpts{user: "alice", rooms: []string{"lobby"}})

	_ = b1.Publish(ctx, "lobby", msg("room from 1"))
	_ = b1.SendToUser(ctx, "alice", msg("alice from 1"))
	_ = b1.SendToConn(ctx, on2.connID(), msg("conn on 2 from 1"))
	// Markers from the same broker: after the three sends on one NATS
	// connection. The other namespace's marker comes from its own broker,
	// once the server has routed b1's sends (Flush).
	for _, c := range []client{on1, on2, bob2} {
		sendMarker(t, b1, c, "end")
	}
	if err := b1.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	sendMarker(t, other, foreign, "end")
	expectUntil(t, "end", map[string]receipt{
		"alice on 1": {on1, "message:lobby:room from 1,direct::alice from 1"},
		"alice on 2": {on2, "message:lobby:room from 1,direct::alice from 1,direct::conn on 2 from 1"},
		"bob on 2":   {bob2, "message:lobby:room from 1"},
		"namespace":  {foreign, ""},
	})
	// The other way round.
	_ = b2.Publish(ctx, "lobby", msg("room from 2"))
	if f := on1.next(t); f.text() != "room from 2" {
		t.Fatalf("on 1 got %+v", f)
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
				if _, err := c.nextErr(time.Minute); err != nil {
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
		_ = c.c.Close(websocket.StatusNormalClosure, "")
	}
	eventually(t, "all topics released", func() bool { b.mu.RLock(); defer b.mu.RUnlock(); return len(b.topics) == 0 && len(b.conns) == 0 })
}

// goroutinesIn counts the goroutines whose stack contains fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
