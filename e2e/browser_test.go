// Package e2e drives a real headless Chromium against the library and the
// example apps: the browser client over real WebSocket and EventSource, real
// cookies, real pages. ./test.sh installs Debian's chromium; in CI a missing
// browser fails the tests, elsewhere they are skipped with a message.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomcast/pubsub/internal/testkit"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

var (
	chromium    string // path, "" when missing
	binDir      string // built examples
	rootBrowser context.Context
	screenshots string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				chromium = p
				break
			}
		}
	}
	if chromium == "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "e2e: chromium not found and CI is set: failing (./test.sh installs it)")
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: chromium not found: browser tests skipped; ./test.sh installs it")
		return m.Run()
	}
	var err error
	if binDir, err = os.MkdirTemp("", "roomcast-e2e"); err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(binDir)
	build := exec.Command("go", "build", "-o", binDir+"/", "../examples/chat", "../examples/ticker", "../examples/notify", "../examples/cluster", "../cmd/roomcast")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the examples:", err)
		return 1
	}
	screenshots, _ = filepath.Abs("../screenshots")
	_ = os.MkdirAll(screenshots, 0o755)

	profile, _ := os.MkdirTemp("", "roomcast-chromium")
	defer os.RemoveAll(profile)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(profile),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1100, 700))
	defer cancelAlloc()
	var cancel context.CancelFunc
	rootBrowser, cancel = chromedp.NewContext(alloc)
	defer cancel()
	if err := chromedp.Run(rootBrowser); err != nil { // starts the browser
		fmt.Fprintln(os.Stderr, "e2e: starting chromium:", err)
		return 1
	}
	return m.Run()
}

// tab is a page in its own browser context: its own cookies, like another
// person's browser. Uncaught JavaScript exceptions fail the test.
type tab struct {
	t   *testing.T
	ctx context.Context
	bc  cdp.BrowserContextID
}

func newTab(t *testing.T) *tab {
	t.Helper()
	if chromium == "" {
		t.Skip("chromium not found; ./test.sh installs it")
	}
	// A browser context of our own, and its first target in a new window:
	// chromedp's WithNewBrowserContext fails in new headless mode ("no
	// browser is open") because its target asks for no window.
	var bc cdp.BrowserContextID
	err := chromedp.Run(rootBrowser, chromedp.ActionFunc(func(ctx context.Context) (err error) {
		bc, err = target.CreateBrowserContext().WithDisposeOnDetach(true).Do(cdp.WithExecutor(ctx, chromedp.FromContext(ctx).Browser))
		return err
	}))
	if err != nil {
		t.Fatalf("new browser context: %v", err)
	}
	return openTab(t, bc)
}

// sibling opens another tab in the same browser context (same cookies).
func (b *tab) sibling() *tab { return openTab(b.t, b.bc) }

func openTab(t *testing.T, bc cdp.BrowserContextID) *tab {
	var tid target.ID
	err := chromedp.Run(rootBrowser, chromedp.ActionFunc(func(ctx context.Context) (err error) {
		exec := cdp.WithExecutor(ctx, chromedp.FromContext(ctx).Browser)
		tid, err = target.CreateTarget("about:blank").WithBrowserContextID(bc).WithNewWindow(true).Do(exec)
		return err
	}))
	if err != nil {
		t.Fatalf("new tab: %v", err)
	}
	ctx, cancel := chromedp.NewContext(rootBrowser, chromedp.WithTargetID(tid))
	b := newTabIn(t, ctx, cancel)
	b.bc = bc
	return b
}

func newTabIn(t *testing.T, ctx context.Context, cancel context.CancelFunc) *tab {
	var mu sync.Mutex
	var exceptions []string
	chromedp.ListenTarget(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			exceptions = append(exceptions, e.ExceptionDetails.Error())
			mu.Unlock()
		}
	})
	if err := chromedp.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range exceptions {
			t.Errorf("JavaScript exception: %s", e)
		}
		cancel()
	})
	return &tab{t: t, ctx: ctx}
}

func (b *tab) run(actions ...chromedp.Action) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func (b *tab) open(url string) { b.t.Helper(); b.run(chromedp.Navigate(url)) }

// eval evaluates a JavaScript expression into out (nil to discard).
func (b *tab) eval(expr string, out any) {
	b.t.Helper()
	b.run(chromedp.Evaluate(expr, out, awaitPromise))
}

func awaitPromise(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }

// waitFor polls a JavaScript condition.
func (b *tab) waitFor(what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	var ok bool
	guarded := "(() => { try { return !!(" + cond + ") } catch { return false } })()" // not defined yet = not yet
	if err := chromedp.Run(ctx, chromedp.Poll(guarded, &ok, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		var dump string
		_ = chromedp.Run(b.ctx, chromedp.Evaluate(`JSON.stringify(window.events ?? document.body.innerText.slice(0, 2000))`, &dump))
		b.t.Fatalf("waiting for %s (%s): %v\npage: %s", what, cond, err, dump)
	}
}

// screenshot saves the page to screenshots/NAME.png (not in git).
func (b *tab) screenshot(name string) {
	b.t.Helper()
	var png []byte
	b.run(chromedp.FullScreenshot(&png, 100))
	if err := os.WriteFile(filepath.Join(screenshots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// setValue types into an input, as a person would, without relying on
// layout (a hidden-then-shown element defeats chromedp's visibility checks).
func setValue(sel, value string) chromedp.Action {
	return chromedp.Evaluate(fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event("input")); })()`, sel, value), nil)
}

// submit submits the form of sel the way Enter would (firing onsubmit).
func submit(sel string) chromedp.Action {
	return chromedp.Evaluate(fmt.Sprintf(`document.querySelector(%q).closest("form").requestSubmit()`, sel), nil)
}

func click(sel string) chromedp.Action {
	return chromedp.Evaluate(fmt.Sprintf(`document.querySelector(%q).click()`, sel), nil)
}

// startExample runs a built example on a free port until the test ends.
func startExample(t *testing.T, name string, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(filepath.Join(binDir, name), append([]string{"-addr", addr}, args...)...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Graceful: the example shuts its broker down on SIGINT.
	testkit.StopAtCleanup(t, cmd, 10*time.Second, func(graceful bool) {
		if !graceful {
			t.Errorf("%s did not stop on SIGINT", name)
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url + "/")
		if err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start: %v", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jsString(s string) string { return fmt.Sprintf("%q", s) }

var _ = strings.Contains
