package pubsub

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// The browser client, served by Handler at <mount>/client.js with its type
// declarations at <mount>/client.d.ts. The same files are in the
// repository's client/ folder, to copy into a front end.
var (
	//go:embed client/client.js
	clientJS []byte
	//go:embed client/client.d.ts
	clientDTS []byte
)

var clientFiles = map[string]struct {
	body        []byte
	contentType string
	etag        string
}{
	"client.js":   {clientJS, "text/javascript; charset=utf-8", etag(clientJS)},
	"client.d.ts": {clientDTS, "application/typescript; charset=utf-8", etag(clientDTS)},
}

func etag(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

// serveClientFile serves the client for a GET or HEAD whose path ends in
// /client.js or /client.d.ts, and reports whether it did.
func serveClientFile(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	i := strings.LastIndexByte(r.URL.Path, '/')
	f, ok := clientFiles[r.URL.Path[i+1:]]
	if !ok {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("ETag", f.etag)
	// Revalidated cheaply (304) after an hour, so an upgrade reaches browsers.
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	return true
}
