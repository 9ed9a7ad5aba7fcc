package e2e

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// login fills the example's login form.
func (b *tab) login(name string) {
	b.t.Helper()
	b.waitFor("login form", `!document.querySelector("#login").classList.contains("hidden")`)
	b.run(setValue("#login [name=name]", name), submit("#login [name=name]"))
}

// The chat example end to end: two people log in, join a room, one sends
// through the REST API, the other sees it; then a direct message.
func TestChatExample(t *testing.T) {
	url := startExample(t, "chat")
	alice, bob := newTab(t), newTab(t)
	for name, b := range map[string]*tab{"alice": alice, "bob": bob} {
		b.open(url)
		b.login(name)
		b.waitFor("live", `live.state === "open"`)
		b.run(setValue("#join [name=room]", "game:42"), submit("#join [name=room]"))
		b.waitFor("room button", `!!document.querySelector('button[data-room="game:42"]')`)
	}
	// Joining is a subscribe frame; give it its round trip before sending.
	bob.waitFor("subscribed", `document.querySelector('button[data-room="game:42"]').classList.contains("active")`)
	alice.run(setValue("#send [name=text]", "hello from alice"), submit("#send [name=text]"))
	bob.waitFor("alice's message", `document.querySelector("#log").innerText.includes("hello from alice")`)
	var from string
	bob.eval(`document.querySelector("#log li .from").textContent`, &from)
	if from != "alice" {
		t.Fatalf("sender shown as %q", from)
	}
	// lobby did not get it.
	bob.run(click(`button[data-room="lobby"]`))
	var lobby string
	bob.eval(`document.querySelector("#log").innerText`, &lobby)
	if lobby != "" {
		t.Fatalf("lobby shows %q", lobby)
	}
	// A direct message.
	alice.run(click("#dms"), setValue("#send [name=to]", "bob"), setValue("#send [name=text]", "psst"), submit("#send [name=text]"))
	bob.waitFor("DM badge", `document.querySelector("#dms").textContent.includes("(1)")`)
	bob.run(click("#dms"))
	bob.waitFor("DM text", `document.querySelector("#log").innerText.includes("psst")`)
	alice.screenshot("chat-alice")
	bob.screenshot("chat-bob")
}

// The ticker example follows prices over SSE only, and the charts move.
func TestTickerExample(t *testing.T) {
	url := startExample(t, "ticker", "-interval", "50ms")
	b := newTab(t)
	b.open(url)
	b.waitFor("live over SSE", `live.state === "open" && live.transport === "sse"`)
	b.waitFor("six charts", `document.querySelectorAll(".card canvas").length === 6`)
	var before string
	b.eval(`document.querySelector('[data-symbol="NVDA"] label').textContent`, &before)
	b.waitFor("live prices", `document.querySelector('[data-symbol="NVDA"] label').textContent !== `+jsString(before))
	b.run(chromedp.Sleep(500 * 1e6))
	b.screenshot("ticker")
}

// The notify example: a notification reaches both tabs of its user and no
// one else.
func TestNotifyExample(t *testing.T) {
	url := startExample(t, "notify")
	alice, bob := newTab(t), newTab(t)
	alice.open(url)
	alice.login("alice")
	alice.waitFor("live", `live.state === "open"`)
	alice2 := alice.sibling() // a second tab, same session
	alice2.open(url)
	bob.open(url)
	bob.login("bob")
	for _, b := range []*tab{alice2, bob} {
		b.waitFor("live", `live.state === "open"`)
	}
	bob.run(setValue("#send [name=to]", "alice"), setValue("#send [name=title]", "build is green"), submit("#send [name=title]"))
	for _, b := range []*tab{alice, alice2} {
		b.waitFor("notification", `document.querySelector("#inbox").innerText.includes("build is green")`)
	}
	// Bob notifies himself last: when he has that, he would have had alice's.
	bob.run(setValue("#send [name=to]", "bob"), setValue("#send [name=title]", "note to self"), submit("#send [name=title]"))
	bob.waitFor("own note", `document.querySelector("#inbox").innerText.includes("note to self")`)
	var n int
	bob.eval(`document.querySelectorAll("#inbox li").length`, &n)
	if n != 1 {
		t.Fatalf("bob has %d notifications, want 1", n)
	}
	alice.screenshot("notify-alice")
	bob.screenshot("notify-bob")
}
