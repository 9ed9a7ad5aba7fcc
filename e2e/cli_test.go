package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chatLogin logs name in to the chat example and returns its session
// cookie as "name=value", what an operator copies from a browser.
func chatLogin(t *testing.T, base, name string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"name": {name}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json") // an answer, not a redirect that drops the cookie
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "demo_session" {
			return c.Name + "=" + c.Value
		}
	}
	t.Fatalf("login of %s set no session cookie (HTTP %d)", name, resp.StatusCode)
	return ""
}

func chatPost(t *testing.T, base, cookie, room, text string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"text": text})
	req, _ := http.NewRequest(http.MethodPost, base+"/api/rooms/"+url.PathEscape(room)+"/messages", strings.NewReader(string(body)))
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("posting to %s: HTTP %d", room, resp.StatusCode)
	}
}

// The contract: `roomcast sub http://…/live lobby --cookie …`
// prints the chat example's messages, only the room's, and stops cleanly
// on Ctrl-C; `roomcast presence` shows who is there.
func TestCLISubscribesToChatExample(t *testing.T) {
	if binDir == "" {
		t.Skip("examples not built (chromium missing)")
	}
	base := startExample(t, "chat")
	alice, bob := chatLogin(t, base, "alice"), chatLogin(t, base, "bob")
	cli := filepath.Join(binDir, "roomcast")

	sub := exec.Command(cli, "sub", base+"/live", "lobby", "--cookie", alice)
	stdout, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	sub.Stderr = &stderr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Process.Kill(); _ = sub.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	// Subscribed once presence shows alice in the lobby.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command(cli, "presence", base+"/live", "lobby", "--cookie", bob).CombinedOutput()
		if err != nil {
			t.Fatalf("roomcast presence: %v\n%s", err, out)
		}
		if strings.Contains(string(out), "alice (1)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice never in the lobby; presence says:\n%s\nsub's stderr: %s", out, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	chatPost(t, base, bob, "game:42", "not for the lobby")
	chatPost(t, base, bob, "lobby", "hello from bob")
	chatPost(t, base, bob, "lobby", "second")
	var got []string
	for len(got) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("sub ended after %q; stderr: %s", got, stderr.String())
			}
			got = append(got, l)
		case <-time.After(10 * time.Second):
			t.Fatalf("sub printed %q; stderr: %s", got, stderr.String())
		}
	}
	for i, want := range []string{"hello from bob", "second"} {
		if !strings.HasPrefix(got[i], "[lobby #") || !strings.Contains(got[i], `"text":"`+want+`"`) || !strings.Contains(got[i], `"from":"bob"`) {
			t.Fatalf("line %d is %q, want lobby's %q from bob", i, got[i], want)
		}
	}
	if err := sub.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for l := range lines {
		t.Fatalf("after the two messages sub printed %q (game:42's message leaked?)", l)
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("sub exited with %v after SIGINT; stderr: %s", err, stderr.String())
	}

	// Without the cookie: the host's 401, said once, exit 1.
	out, err := exec.Command(cli, "sub", base+"/live", "lobby").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "401") {
		t.Fatalf("sub without a cookie: %v\n%s", err, out)
	}
}
