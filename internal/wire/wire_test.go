package wire

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzAppendStringIsJSON(f *testing.F) {
	for _, s := range []string{"", "a", `"quoted"`, "back\\slash", "nl\n", "\x00\x1f", "\u2028\u2029", "é", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q encoded as invalid JSON %s: %v", s, b, err)
		}
		if bytes.ContainsAny(b, "\n\r") {
			t.Fatalf("%q encoded with a raw newline", s)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("round trip %q -> %q", s, got)
		}
	})
}

func FuzzEnvelopeRoundTrip(f *testing.F) {
	f.Add("id-1", "alice", []byte(`{"a":1}`))
	f.Add("", "", []byte(`1`))
	f.Fuzz(func(t *testing.T, id, from string, data []byte) {
		p := AppendEnvelope(nil, Envelope{ID: id, From: from, Data: data})
		e, err := ParseEnvelope(p)
		if err != nil || e.ID != id || e.From != from || !bytes.Equal(e.Data, data) {
			t.Fatalf("round trip: %+v %v", e, err)
		}
		// Any input parses or fails cleanly, never panics.
		_, _ = ParseEnvelope(data)
	})
}

func TestMessageFrameIsOneLineOfJSON(t *testing.T) {
	data, ok := CompactJSON([]byte("{\n  \"text\": \"a\\nb\",\r\n  \"n\": [1,\n 2]\n}"))
	if !ok {
		t.Fatal("valid JSON rejected")
	}
	for _, f := range []*Frame{
		MessageFrame(KindRoom, "room \"q\"", Envelope{ID: "i", From: "bob\n", Data: data}),
		MessageFrame(KindUser, "", Envelope{ID: "i", Data: data}),
		MessageFrame(KindConn, "", Envelope{ID: "i", Data: data}),
		Welcome("c.1", "é"), Reply("subscribed", "r", "", json.RawMessage(`"x"`)), Error("bad_request", "m\n", "r", nil), Close(4001, "slow"),
	} {
		if bytes.ContainsAny(f.JSON, "\n\r") || !json.Valid(f.JSON) {
			t.Errorf("frame %s is not one line of valid JSON", f.JSON)
		}
	}
	if _, ok := CompactJSON([]byte(`{"a":1} {"b":2}`)); ok {
		t.Error("two JSON values accepted")
	}
}

func TestParseClientFrame(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{`{"type":"subscribe","room":"r","ref":1}`, ""},
		{`{"type":"subscribe","ref":"abc"}`, ""},
		{`nope`, "not a JSON object"},
		{`{"room":"r"}`, "no \"type\""},
		{`{"type":"x","ref":[1]}`, "ref"},
		{`{"type":"x","ref":"` + strings.Repeat("a", 70) + `"}`, "ref"},
	} {
		_, err := ParseClientFrame([]byte(tc.in))
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseClientFrame(%s) = %v, want %q", tc.in, err, tc.err)
		}
	}
}

// BenchmarkFrameEncode is the per-message cost of building the client frame,
// paid once per message per instance, whatever the number of subscribers.
func BenchmarkFrameEncode(b *testing.B) {
	env := Envelope{ID: "k2Fz8qLw0P-1234", Data: []byte(`{"b":1,"s":42,"t":1763712000000000000,"p":"xxxxxxxxxxxxxxx"}`)}
	b.ReportAllocs()
	for b.Loop() {
		_ = MessageFrame(KindRoom, "lobby", env)
	}
}
