package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/roomcast/pubsub"
)

// recordSockets keeps every WebSocket the page opens in window.sockets,
// to read what was negotiated (WebSocket.extensions).
const recordSockets = `window.sockets = [];
window.WebSocket = class extends WebSocket { constructor(...a) { super(...a); window.sockets.push(this); } };`

// With WithCompression, Chromium (which offers permessage-deflate) gets it,
// and the browser client works as before: small messages, large ones, and
// the frames the page sends, which Chromium compresses.
func TestBrowserWithCompression(t *testing.T) {
	ps := newBroker(t, pubsub.WithCompression(256), pubsub.WithClientPublish(func(context.Context, string, string) error { return nil }))
	srv := libServer(t, ps, nil)
	b := newTab(t)
	b.run(chromedp.ActionFunc(func(ctx context.Context) error {
		_, err := page.AddScriptToEvaluateOnNewDocument(recordSockets).Do(ctx)
		return err
	}))
	b.open(srv.URL + "/?rooms=lobby")
	b.waitFor("open", openWS)
	b.waitFor("subscription", subscribedTo("lobby", 1))
	var ext string
	b.eval(`window.sockets.at(-1).extensions`, &ext)
	if ext != "permessage-deflate; client_no_context_takeover; server_no_context_takeover" {
		t.Fatalf("negotiated extensions %q", ext)
	}
	big := strings.Repeat("compress me, ", 1000)
	publish(t, ps, "lobby", "small")
	publish(t, ps, "lobby", big)
	b.waitFor("both messages", received("lobby", "small")+" && "+received("lobby", big))
	var id string
	b.eval(`live.publish("lobby", {text: "from the page " + "x".repeat(3000)})`, &id)
	if id == "" {
		t.Fatal("publish returned no id")
	}
	b.waitFor("own message", received("lobby", "from the page "+strings.Repeat("x", 3000)))
}
