package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// tmpfs mounts a RAM disk of size bytes for the test (root only: CI runs
// as root; elsewhere the test is skipped).
func tmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fillDisk fills dir's disk but for about leave bytes, with a file it
// returns the path of.
func fillDisk(t *testing.T, dir string, leave int64) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if err != nil {
			break
		}
	}
	f.Close()
	if err := os.Truncate(name, max(n-leave, 0)); err != nil {
		t.Fatal(err)
	}
	return name
}

// The history store's disk fills up while messages flow: the publish that
// cannot be stored is ErrStoreFailed, the next ones fail fast, plain rooms
// go on, subscribers of the room are told once, readiness fails and the
// cause is logged once at Error. When space is freed the store comes back
// by itself, without a restart, within seconds: nothing acknowledged is
// lost, and the subscriber got every acknowledged message once, in order.
func TestStoreDiskFullFailsFastAndRecovers(t *testing.T) {
	dir := tmpfs(t, 48<<20)
	logs := &testkit.Logs{}
	b := newBroker(t, WithLogger(logs.Logger()), WithStoreDir(filepath.Join(dir, "store")),
		WithHistory("chat:*", History{Messages: 100000}))
	srv := serve(t, b, nil)
	sub := dialWS(t, srv, dialOpts{user: "sub", rooms: []string{"chat:full", "lobby"}})
	filler := fillDisk(t, dir, 3<<20)

	pad := strings.Repeat("x", 32<<10)
	var acked []string
	var err error
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("1000 messages of 32 KiB stored on a disk with 3 MiB free")
		}
		text := fmt.Sprintf("m%d", i)
		_, err = b.PublishOnce(ctx, "chat:full", text, []byte(fmt.Sprintf(`{"text":%q,"pad":%q}`, text, pad)))
		if err != nil {
			break
		}
		acked = append(acked, text)
	}
	if !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("publishing on a full disk: %v, want ErrStoreFailed", err)
	}
	t.Logf("%d messages stored before the disk was full", len(acked))
	start := time.Now()
	if _, err := b.PublishAck(ctx, "chat:full", msg("refused")); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("next publish: %v, want ErrStoreFailed", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("a publish to a store known to be failing took %v: it must fail fast", d)
	}
	if err := b.Ready(ctx); !errors.Is(err, ErrNotReady) || !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("Ready with the store failing: %v", err)
	}
	if err := b.Publish(ctx, "lobby", msg("plain rooms go on")); err != nil {
		t.Fatal(err)
	}
	var got []string
	told := 0
	for {
		f := sub.next(t)
		if f.Type == "error" && f.ErrorCode() == "store_failed" && f.Room == "chat:full" {
			told++
			continue
		}
		if f.Room == "lobby" {
			break
		}
		if strings.HasPrefix(f.Text(), "m") {
			got = append(got, f.Text())
		}
	}
	if told != 1 {
		t.Fatalf("the room's subscriber was told %d times, want once", told)
	}
	errorLines := 0
	for _, r := range logs.At(slog.LevelError) {
		if strings.Contains(r.Msg, "history store cannot write") {
			errorLines++
		}
	}
	if errorLines != 1 {
		t.Fatalf("%d Error lines naming the store failure, want 1", errorLines)
	}

	// Space comes back: no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	var ack Ack
	for {
		short, cancel := context.WithTimeout(ctx, time.Second)
		ack, err = b.PublishOnce(short, "chat:full", "after", []byte(`{"text":"after"}`))
		cancel()
		if err == nil {
			break
		}
		if time.Since(freed) > 10*time.Second {
			t.Fatalf("10 s after space was freed, publishing still fails: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("publishing again %v after space was freed (id %s)", time.Since(freed).Round(time.Millisecond), ack.ID)
	testkit.Eventually(t, "ready again", func() bool { return b.Ready(ctx) == nil })
	acked = append(acked, "after")
	for len(got) < len(acked) {
		if f := sub.next(t); f.Type == "message" {
			got = append(got, f.Text())
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(acked) {
		t.Fatalf("the subscriber got %d messages %v…, want the %d acknowledged once each, in order", len(got), got[:min(5, len(got))], len(acked))
	}
	stored, err := b.History(ctx, "chat:full", MaxHistoryLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(acked) {
		t.Fatalf("history holds %d messages, want the %d acknowledged", len(stored), len(acked))
	}
	expectOnly(t, b, sub)
}

// A disk too small for the default history size is a clear error at New,
// naming the directory and the option; a size that fits it works.
func TestNewOnTinyDiskSaysSo(t *testing.T) {
	dir := tmpfs(t, 12<<20)
	store := filepath.Join(dir, "store")
	_, err := New(WithLogger(quietLogger()), WithStoreDir(store), WithHistory("*", History{Messages: 10}))
	if !errors.Is(err, ErrStoreFailed) || !strings.Contains(err.Error(), store) || !strings.Contains(err.Error(), "WithHistoryMaxBytes") {
		t.Fatalf("New on a 12 MiB disk: %v", err)
	}
	b := newBroker(t, WithStoreDir(store), WithHistory("*", History{Messages: 10}), WithHistoryMaxBytes(4<<20))
	if _, err := b.PublishAck(ctx, "r", msg("fits")); err != nil {
		t.Fatal(err)
	}
}
