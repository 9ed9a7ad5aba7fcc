package subject

import (
	"strings"
	"testing"
)

func TestValidRoom(t *testing.T) {
	for _, ok := range []string{"lobby", "game:42", "user/alice/inbox", "équipe-3", "A", "$"[1:] + "x", strings.Repeat("x", MaxRoomLen)} {
		if err := ValidRoom(ok); err != nil {
			t.Errorf("ValidRoom(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ">", "*", "a.b", "a.>", "$SYS", "$", " ", "a b", "a\tb", "a\nb", "nul\x00", "\xff", "\u200bzero-width", strings.Repeat("x", MaxRoomLen+1)} {
		if ValidRoom(bad) == nil {
			t.Errorf("ValidRoom(%q) accepted", bad)
		}
	}
}

// No room or user, valid or not, can produce a subject with a wildcard, an
// extra token or a reserved prefix.
func FuzzSubjectsStayOneToken(f *testing.F) {
	for _, s := range []string{">", "*", "a.b", "$SYS.>", " ", "é", "\x00"} {
		f.Add(s)
	}
	sp := New("ns")
	f.Fuzz(func(t *testing.T, name string) {
		for _, subj := range []string{sp.Room(name), sp.User(name)} {
			tokens := strings.Split(subj, ".")
			if len(tokens) != 3 || tokens[0] != "ns" {
				t.Fatalf("%q -> %q: not three tokens", name, subj)
			}
			last := tokens[2]
			if strings.ContainsAny(last, "*> \t\r\n$") || (last == "" && name != "") {
				t.Fatalf("%q -> %q: unsafe token", name, subj)
			}
		}
	})
}

func TestParseConnID(t *testing.T) {
	inst, ctr, err := ParseConnID(ConnID("AbC123", "1f"))
	if err != nil || inst != "AbC123" || ctr != "1f" {
		t.Fatalf("round trip: %q %q %v", inst, ctr, err)
	}
	for _, bad := range []string{"", "a", "a.", ".b", "a.b.c", "a.*", "*.b", "a.>", "a b.c", "a-b.c", strings.Repeat("a", 70) + ".1"} {
		if _, _, err := ParseConnID(bad); err == nil {
			t.Errorf("ParseConnID(%q) accepted", bad)
		}
	}
}

func TestValidNamespace(t *testing.T) {
	for _, bad := range []string{"", "a.b", "*", ">", "$SYS", strings.Repeat("n", 33)} {
		if ValidNamespace(bad) == nil {
			t.Errorf("ValidNamespace(%q) accepted", bad)
		}
	}
	if err := ValidNamespace("my-app_1"); err != nil {
		t.Fatal(err)
	}
}
