package pubsub_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/roomcast/pubsub/internal/wire"
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

// The browser client must stay small: at most 4 KiB minified and gzipped.
// client/test.sh measures that with a real minifier (esbuild --minify,
// gzip -9) and fails above 4096 bytes. This test, which needs no npm, is a
// cruder bound of the same: "minified" here is what any minifier does at
// the least: comments (whole lines, and a trailing " // " comment: client.js
// has no " // " in a string), blank lines and indentation removed, names
// kept. It comes out several hundred bytes above esbuild's figure, so
// passing it implies passing the real budget.
func TestClientSize(t *testing.T) {
	js := clientJS(t)
	var min bytes.Buffer
	for line := range strings.SplitSeq(string(js), "\n") {
		if code, _, ok := strings.Cut(line, " // "); ok {
			line = code
		}
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
	if buf.Len() > 4096 {
		t.Fatalf("client.js is %d bytes minified and gzipped, budget 4096", buf.Len())
	}
}

// The npm package @roomcast/client (client/package.json): its major version
// is the protocol version the client speaks (PROTOCOL.md, wire.Protocol), and
// it is an ESM-only, side-effect-free package with types and no dependencies
// whose tarball holds the browser files only (not the Go package beside them).
func TestClientPackage(t *testing.T) {
	raw, err := os.ReadFile("client/package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Name         string                     `json:"name"`
		Version      string                     `json:"version"`
		Type         string                     `json:"type"`
		SideEffects  *bool                      `json:"sideEffects"`
		Types        string                     `json:"types"`
		Exports      map[string]json.RawMessage `json:"exports"`
		Files        []string                   `json:"files"`
		License      string                     `json:"license"`
		Repository   map[string]string          `json:"repository"`
		Engines      map[string]string          `json:"engines"`
		Dependencies map[string]string          `json:"dependencies"`
		Peer         map[string]string          `json:"peerDependencies"`
		Scripts      map[string]string          `json:"scripts"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatal(err)
	}
	major, _, _ := strings.Cut(pkg.Version, ".")
	if pkg.Name != "@roomcast/client" || major != strconv.Itoa(wire.Protocol) {
		t.Errorf("%s@%s: want @roomcast/client, major version %d (wire.Protocol)", pkg.Name, pkg.Version, wire.Protocol)
	}
	if pkg.Type != "module" || pkg.SideEffects == nil || *pkg.SideEffects || pkg.Types != "./client.d.ts" {
		t.Errorf(`type %q, sideEffects %v, types %q: want "module", false, "./client.d.ts"`, pkg.Type, pkg.SideEffects, pkg.Types)
	}
	var root struct{ Types, Default string }
	if err := json.Unmarshal(pkg.Exports["."], &root); err != nil || root.Types != "./client.d.ts" || root.Default != "./client.js" {
		t.Errorf(`exports["."] = %s: want {"types": "./client.d.ts", "default": "./client.js"}`, pkg.Exports["."])
	}
	if len(pkg.Dependencies)+len(pkg.Peer) > 0 || pkg.Scripts["install"]+pkg.Scripts["postinstall"]+pkg.Scripts["preinstall"] != "" {
		t.Errorf("dependencies %v, peerDependencies %v, scripts %v: the client has no runtime dependencies nor install scripts", pkg.Dependencies, pkg.Peer, pkg.Scripts)
	}
	if pkg.License == "" || pkg.Repository["url"] == "" || pkg.Engines["node"] == "" {
		t.Errorf("license %q, repository %v, engines %v: all wanted", pkg.License, pkg.Repository, pkg.Engines)
	}
	for _, f := range pkg.Files {
		if !slices.Contains([]string{"client.js", "client.d.ts", "README.md"}, f) {
			t.Errorf("files: %q: the tarball is client.js, client.d.ts and README.md only (the Go package lives beside them)", f)
		}
	}
	if !slices.Contains(pkg.Files, "client.js") || !slices.Contains(pkg.Files, "client.d.ts") {
		t.Errorf("files %v: want client.js and client.d.ts", pkg.Files)
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
