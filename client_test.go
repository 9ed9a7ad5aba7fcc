package pubsub_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
)

// clientJS is the client front ends copy, which the handler serves.
func clientJS(t *testing.T) []byte {
	t.Helper()
	js, err := os.ReadFile("client/client.js")
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// The browser client must stay small: under 4 KiB minified and gzipped.
// "Minified" here is what any minifier does at the least: comment lines,
// blank lines and indentation removed; a real minifier only does better.
func TestClientSize(t *testing.T) {
	js := clientJS(t)
	var min bytes.Buffer
	for line := range strings.SplitSeq(string(js), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		min.WriteString(line + "\n")
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(min.Bytes())
	_ = zw.Close()
	t.Logf("client.js: %d bytes, %d stripped, %d stripped and gzipped", len(js), min.Len(), buf.Len())
	if buf.Len() >= 4096 {
		t.Fatalf("client.js is %d bytes minified and gzipped, budget 4096", buf.Len())
	}
}

func TestHandlerServesClientAndProbe(t *testing.T) {
	b := newBroker(t)
	srv := serve(t, b, nil)
	mux := http.NewServeMux()
	mux.Handle("GET /live/client.js", b.Handler())
	mux.Handle("GET /live/client.d.ts", b.Handler())
	mux.Handle("/live", b.Handler())
	srv.Config.Handler = mux

	resp, err := http.Get(srv.URL + "/live/client.js")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" || !bytes.Equal(body, clientJS(t)) {
		t.Fatalf("client.js: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") == "" {
		t.Fatal("client.js without ETag or Cache-Control")
	}
	req, _ := http.NewRequest("GET", srv.URL+"/live/client.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: %d, want 304", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/live/client.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("client.d.ts: %d", resp.StatusCode)
	}
	resp, err = http.Head(srv.URL + "/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("HEAD probe: %d, want 204", resp.StatusCode)
	}
}
