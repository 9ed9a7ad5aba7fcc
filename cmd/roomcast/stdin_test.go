package main

// Publishing from stdin, interrupts, and the --json output.

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// pub - with --key K: line n carries K-n, so every line is stored (and the
// same input sent again would be stored once).
func TestPubStdinKeysEachLine(t *testing.T) {
	b, url := server(t)
	out, _, err := cli(t, "pub", url, "chat:k", "-", "--key", "k1", "--cookie", "user=bob")
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := b.History(context.Background(), "chat:k", 10)
	if len(hist) != 2 {
		t.Fatalf("pub - --key printed %q but the room holds %d message(s)", out, len(hist))
	}
}

// Ctrl-C while pub - waits for stdin ends it.
func TestPubStdinInterrupt(t *testing.T) {
	_, url := server(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"pub", url, "chat:1", "-", "--cookie", "user=bob"}, pr, io.Discard, io.Discard)
	}()
	time.Sleep(500 * time.Millisecond)
	cancel() // Ctrl-C
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		pw.Close() // let it go
		<-done
		t.Fatal("pub - did not stop on Ctrl-C while reading stdin")
	}
}

// --json output is lower case throughout, presence included.
func TestJSONOutputCasing(t *testing.T) {
	_, url := server(t)
	out, _, err := cli(t, "presence", url, "chat:1", "--json", "--cookie", "user=carol")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, `"Room"`) {
		t.Fatalf("presence --json: %s", out)
	}
}
