package pubsub_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every error code the server can send a client — in an error frame
// (internal/protocol's codes, the broker's coded errors) or in a
// Roomcast-Error header — is in client.d.ts and in PROTOCOL.md, so the
// declarations and the document stay in step with the Go side.
func TestErrorCodesAreDocumented(t *testing.T) {
	codes := map[string]bool{}
	patterns := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s+\w+\s+=\s+"([a-z_]+)"`),                      // internal/protocol's const block
		regexp.MustCompile(`codedError\{"[^"]*", "([a-z_]+)"\}`),                 // the broker's coded errors
		regexp.MustCompile(`"Roomcast-Error", "([a-z_]+)"`),                      // HTTP refusals
		regexp.MustCompile(`(?:Roomcast-Error",\s*)?refuse\([^,]+, "([a-z_]+)"`), // post.go's refusals
	}
	files, _ := filepath.Glob("*.go")
	files = append(files, "internal/protocol/protocol.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(src)
		if f == "internal/protocol/protocol.go" {
			text = text[strings.Index(text, "// Codes of error frames"):strings.Index(text, "// Coder is")]
		}
		for _, p := range patterns[1:] {
			for _, m := range p.FindAllStringSubmatch(text, -1) {
				codes[m[1]] = true
			}
		}
		if f == "internal/protocol/protocol.go" {
			for _, m := range patterns[0].FindAllStringSubmatch(text, -1) {
				codes[m[1]] = true
			}
		}
	}
	if len(codes) < 15 {
		t.Fatalf("found only %v: the patterns no longer match the code", codes)
	}
	dts, _ := os.ReadFile("client/client.d.ts")
	doc, _ := os.ReadFile("PROTOCOL.md")
	var missing []string
	for code := range codes {
		if !strings.Contains(string(dts), `"`+code+`"`) {
			missing = append(missing, code+" (client.d.ts)")
		}
		if !strings.Contains(string(doc), "`"+code+"`") {
			missing = append(missing, code+" (PROTOCOL.md)")
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("undocumented error codes: %v", missing)
	}
}
