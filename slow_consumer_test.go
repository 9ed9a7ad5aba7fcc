package pubsub_test

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	. "github.com/roomcast/pubsub"
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
		f, err := fast.NextErr(20 * time.Second)
		if err != nil {
			close(received)
			t.Fatalf("fast client, message %d: %v", i, err)
		}
		if f.Text() != fmt.Sprint(i) {
			close(received)
			t.Fatalf("fast client: message %d is %q", i, f.Text())
		}
		received <- i
	}
	// The slow client now reads: an in-order prefix of the messages, then 4001.
	next := 0
	for {
		f, err := slow.NextErr(10 * time.Second)
		if err != nil {
			if code := websocket.CloseStatus(err); code != CloseSlowConsumer {
				t.Fatalf("slow client ended with %v (code %d), want %d", err, code, CloseSlowConsumer)
			}
			break
		}
		if f.Text() != fmt.Sprint(next) {
			t.Fatalf("slow client: got %q, want %d", f.Text(), next)
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
		return ConnCount(b) == 1
	})
}
