package pubsub_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	. "github.com/roomcast/pubsub"
	"github.com/roomcast/pubsub/internal/testkit"
)

// Conformance: every example exchange of PROTOCOL.md runs, as written,
// against a live server (embedded NATS, real loopback sockets), over
// WebSocket and over SSE, so the document cannot drift from the server.
// PROTOCOL.md's "Reading the examples" describes the notation this file
// parses; conformanceServer is the server it describes in one sentence.

// conformanceHistory is the pattern of the rooms that keep history.
const conformanceHistory = "chat:*"

// conformanceServer is the server the examples run against: "rooms chat:*
// keep history, the subscribe hook refuses admin, clients may publish to
// lobby and chat:* rooms, a call handler echo answers with its data,
// inboxes keep 2 messages per user, keep-alives every 250 ms". The host's
// middleware names the user an exchange connects as (X-User) and, for
// "for <duration>", the session's end (X-Session-Ends, Unix ms).
func conformanceServer(t *testing.T) (*Broker, *httptest.Server) {
	t.Helper()
	b := newBroker(t,
		WithHistory(conformanceHistory, History{Messages: 100}),
		WithSubscribeAuth(func(_ context.Context, _, room string) error {
			if room == "admin" {
				return errors.New("admins only")
			}
			return nil
		}),
		WithClientPublish(func(_ context.Context, _, room string) error {
			if room == "lobby" || isHistoryRoom(room) {
				return nil
			}
			return errors.New("read-only room")
		}),
		WithCall("echo", func(_ context.Context, c Call) ([]byte, error) { return c.Data, nil }),
		WithInbox(History{Messages: 2}),
		WithKeepAlive(250*time.Millisecond, 10*time.Second),
	)
	withSession := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ms, err := strconv.ParseInt(r.Header.Get("X-Session-Ends"), 10, 64); err == nil {
				r = r.WithContext(ContextWithExpiry(r.Context(), time.UnixMilli(ms)))
			}
			next.ServeHTTP(w, r)
		})
	}
	return b, serve(t, b, withSession(b.Handler()))
}

func isHistoryRoom(room string) bool {
	ok, _ := path.Match(conformanceHistory, room)
	return ok
}

func TestConformance(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	exchanges, err := parseExchanges(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	checkCoverage(t, string(doc), exchanges)
	for _, x := range exchanges {
		for _, tr := range []string{"websocket", "sse"} {
			t.Run(x.name+"/"+tr, func(t *testing.T) {
				if x.only != "" && x.only != tr {
					t.Skipf("PROTOCOL.md:%d is marked (%s only)", x.line, map[string]string{"websocket": "WebSocket", "sse": "SSE"}[x.only])
				}
				runExchange(t, x, tr)
			})
		}
	}
	t.Run("sec3.stream/sse", func(t *testing.T) { checkStreamExample(t, string(doc)) })
}

// --- The notation (PROTOCOL.md, "Reading the examples") ---

// exchange is one ```exchange block of PROTOCOL.md.
type exchange struct {
	name  string // "sec10.1": the block's section and its number there
	line  int    // of the opening fence
	only  string // "websocket" or "sse" for "(WebSocket only)", "(SSE only)"
	steps []step
}

// The kinds of lines.
const (
	stepConnect = iota // → GET /live?room=lobby as alice [for 1s]
	stepHangUp         // → close
	stepSend           // → {client frame}
	stepExpect         // ← {server frame}
	stepClose          // ← close 1012 "service restart"
	stepCall           // · server: Method args…
	stepPeer           // · bob: GET …  |  · bob: {frame}  |  · bob: close
)

type step struct {
	line     int // in PROTOCOL.md
	kind     int
	target   string        // connect, peer GET: the path and query
	user     string        // connect: the user ("" anonymous); peer: who
	session  time.Duration // connect: "for 1s", the session's end
	frame    []byte        // send, expect, peer: the JSON frame
	anyOrder bool          // expect: "(in any order)" with its neighbours
	code     int           // close
	reason   string        // close
	method   string        // call: the broker's method
	args     []string      // call: its arguments (a JSON value as text)
	peerDo   string        // peer: "GET", "frame" or "close"
}

var sectionHeading = regexp.MustCompile(`^## (\d+)\.`)

// parseExchanges returns every ```exchange block of doc, in order.
func parseExchanges(doc string) ([]exchange, error) {
	var out []exchange
	lines := strings.Split(doc, "\n")
	section, n := "0", 0
	for i := 0; i < len(lines); i++ {
		if m := sectionHeading.FindStringSubmatch(lines[i]); m != nil {
			section, n = m[1], 0
		}
		if strings.TrimSpace(lines[i]) != "```exchange" {
			continue
		}
		n++
		x := exchange{name: fmt.Sprintf("sec%s.%d", section, n), line: i + 1}
		connected, open := false, false
		for i++; ; i++ {
			if i == len(lines) {
				return nil, fmt.Errorf("PROTOCOL.md:%d: unterminated exchange", x.line)
			}
			if strings.TrimSpace(lines[i]) == "```" {
				break
			}
			st, only, err := parseStep(lines[i])
			switch {
			case err != nil:
				return nil, fmt.Errorf("PROTOCOL.md:%d: %v", i+1, err)
			case st == nil:
				continue
			case st.kind == stepConnect && open:
				return nil, fmt.Errorf("PROTOCOL.md:%d: a second connection while one is open: other users' are `· user: GET …` lines", i+1)
			case st.kind != stepConnect && st.kind != stepCall && st.kind != stepPeer && !open:
				return nil, fmt.Errorf("PROTOCOL.md:%d: no connection open here", i+1)
			}
			switch st.kind {
			case stepConnect:
				if !connected {
					x.only = only
				}
				connected, open = true, true
			case stepHangUp, stepClose:
				open = false
			}
			st.line = i + 1
			x.steps = append(x.steps, *st)
		}
		if !connected {
			return nil, fmt.Errorf("PROTOCOL.md:%d: an exchange without a `→ GET` line", x.line)
		}
		out = append(out, x)
	}
	return out, nil
}

// parseStep parses one line of an exchange: nil for a blank line or a
// note on its own line; only is a GET line's transport mark.
func parseStep(line string) (st *step, only string, err error) {
	line = strings.TrimSpace(line)
	switch {
	case line == "" || strings.HasPrefix(line, "("):
		return nil, "", nil
	case strings.HasPrefix(line, "→ GET "):
		st = &step{kind: stepConnect}
		words, note := splitNote(strings.TrimPrefix(line, "→ "))
		if err := parseGet(st, words); err != nil {
			return nil, "", err
		}
		switch note {
		case "WebSocket only":
			only = "websocket"
		case "SSE only":
			only = "sse"
		}
		return st, only, nil
	case line == "→ close" || strings.HasPrefix(line, "→ close ("):
		return &step{kind: stepHangUp}, "", nil
	case strings.HasPrefix(line, "→ "):
		frame, _, err := cutJSON(strings.TrimPrefix(line, "→ "))
		return &step{kind: stepSend, frame: frame}, "", err
	case strings.HasPrefix(line, "← close "):
		words, _ := splitNote(strings.TrimPrefix(line, "← close "))
		code, reason, ok := strings.Cut(words, " ")
		st = &step{kind: stepClose}
		if st.code, err = strconv.Atoi(code); err != nil || !ok {
			return nil, "", fmt.Errorf("want `← close <code> \"<reason>\"`")
		}
		if st.reason, err = strconv.Unquote(strings.TrimSpace(reason)); err != nil {
			return nil, "", fmt.Errorf("the close reason: %v", err)
		}
		return st, "", nil
	case strings.HasPrefix(line, "← "):
		frame, note, err := cutJSON(strings.TrimPrefix(line, "← "))
		return &step{kind: stepExpect, frame: frame, anyOrder: note == "in any order"}, "", err
	case strings.HasPrefix(line, "· "):
		who, what, ok := strings.Cut(strings.TrimPrefix(line, "· "), ": ")
		if !ok {
			return nil, "", fmt.Errorf("want `· who: what`")
		}
		if who == "server" {
			st = &step{kind: stepCall}
			st.method, st.args, err = parseCall(what)
			return st, "", err
		}
		st = &step{kind: stepPeer, user: who}
		switch {
		case strings.HasPrefix(what, "GET "):
			words, _ := splitNote(what)
			st.peerDo = "GET"
			err = parseGet(st, words)
		case strings.HasPrefix(what, "{"):
			st.peerDo = "frame"
			st.frame, _, err = cutJSON(what)
		case strings.HasPrefix(what, "close"):
			st.peerDo = "close"
		default:
			err = fmt.Errorf("another user's connection does `GET …`, `{frame}` or `close`")
		}
		return st, "", err
	}
	return nil, "", fmt.Errorf("an exchange line starts with →, ←, · or (")
}

// splitNote separates a line's words from its final "(note)".
func splitNote(s string) (words, note string) {
	if i := strings.Index(s, " ("); i >= 0 && strings.HasSuffix(s, ")") {
		return strings.TrimSpace(s[:i]), s[i+2 : len(s)-1]
	}
	return strings.TrimSpace(s), ""
}

// parseGet reads "GET <target> [as <user> [for <duration>]]".
func parseGet(st *step, words string) error {
	f := strings.Fields(words)
	if len(f) < 2 || f[0] != "GET" || !strings.HasPrefix(f[1], "/live") {
		return fmt.Errorf("want `GET /live?… [as <user> [for <duration>]]`")
	}
	st.target, f = f[1], f[2:]
	if len(f) >= 2 && f[0] == "as" {
		st.user, f = f[1], f[2:]
	}
	if len(f) == 2 && f[0] == "for" && st.kind == stepConnect {
		d, err := time.ParseDuration(f[1])
		if err != nil {
			return err
		}
		st.session, f = d, nil
	}
	if len(f) > 0 {
		return fmt.Errorf("unexpected %q on a GET line", strings.Join(f, " "))
	}
	return nil
}

// cutJSON reads the JSON value s starts with; what follows may only be a
// "(note)".
func cutJSON(s string) (value []byte, note string, err error) {
	dec := json.NewDecoder(strings.NewReader(s))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, "", fmt.Errorf("not a JSON value: %v", err)
	}
	rest := strings.TrimSpace(s[dec.InputOffset():])
	if rest != "" {
		if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
			return nil, "", fmt.Errorf("after the JSON, only a (note): %q", rest)
		}
		note = rest[1 : len(rest)-1]
	}
	return raw, note, nil
}

// parseCall reads "Method arg…": words, Go-quoted strings and one JSON
// value, up to an optional "(note)".
func parseCall(s string) (method string, args []string, err error) {
	method, s, _ = strings.Cut(s, " ")
	for s = strings.TrimSpace(s); s != "" && !strings.HasPrefix(s, "("); s = strings.TrimSpace(s) {
		switch s[0] {
		case '{', '[':
			v, note, err := cutJSON(s)
			if err != nil {
				return "", nil, err
			}
			args, s = append(args, string(v)), ""
			if note != "" {
				s = "(" + note + ")"
			}
		case '"':
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return "", nil, err
			}
			u, _ := strconv.Unquote(q)
			args, s = append(args, u), s[len(q):]
		default:
			w, rest, _ := strings.Cut(s, " ")
			args, s = append(args, w), rest
		}
	}
	return method, args, nil
}

// checkCoverage fails unless every frame type of the tables of sections 4
// (server → client) and 5 (client → server) appears in an exchange.
func checkCoverage(t *testing.T, doc string, exchanges []exchange) {
	t.Helper()
	sent, received := map[string]bool{}, map[string]bool{}
	for _, x := range exchanges {
		for _, st := range x.steps {
			var f struct{ Type string }
			_ = json.Unmarshal(st.frame, &f)
			switch st.kind {
			case stepSend:
				sent[f.Type] = true
			case stepExpect:
				received[f.Type] = true
			case stepClose:
				received["close"] = true
			}
		}
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|")
	for section, seen := range map[string]map[string]bool{"4": received, "5": sent} {
		start := strings.Index(doc, "\n## "+section+". ")
		end := start + 1 + strings.Index(doc[start+1:], "\n## ")
		types := row.FindAllStringSubmatch(doc[start:end], -1)
		if len(types) < 9 {
			t.Fatalf("section %s: found only %d frame types: the table's format changed", section, len(types))
		}
		for _, m := range types {
			if !seen[m[1]] {
				t.Errorf("section %s's frame %q is in no exchange", section, m[1])
			}
		}
	}
}

// --- Example values: opaque values bound to the server's ---

// opaqueFields are the fields whose values in the document are examples
// standing for the server's (ids, times, expiries).
var opaqueFields = map[string]bool{"conn": true, "id": true, "time": true, "expires": true}

// bindings maps the document's example values to the server's real ones,
// one to one.
type bindings struct {
	real    map[any]any // example → the server's value
	example map[any]any // the server's value → example
}

func newBindings() *bindings { return &bindings{real: map[any]any{}, example: map[any]any{}} }

func (b *bindings) clone() *bindings {
	c := newBindings()
	for k, v := range b.real {
		c.real[k], c.example[v] = v, k
	}
	return c
}

var (
	decimal = regexp.MustCompile(`^[0-9]+$`)
	rfc3339 = regexp.MustCompile(`^\d{4}-\d\d-\d\dT`)
)

// bind checks that got can be what example stands for: a value of its
// shape (a number for a number; for a string, a string: a decimal store
// position for a decimal example, an RFC 3339 time for a time), the same
// value as where example first appeared, and not one another example
// stands for.
func (b *bindings) bind(example, got any) error {
	switch ex := example.(type) {
	case json.Number:
		if _, ok := got.(json.Number); !ok {
			return fmt.Errorf("%v stands for a number, got %v", ex, jsonText(got))
		}
	case string:
		s, ok := got.(string)
		switch {
		case !ok || s == "":
			return fmt.Errorf("%q stands for a string, got %v", ex, jsonText(got))
		case decimal.MatchString(ex) && !decimal.MatchString(s):
			return fmt.Errorf("%q stands for a decimal store position, got %q", ex, s)
		case rfc3339.MatchString(ex):
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				return fmt.Errorf("%q stands for an RFC 3339 time, got %q", ex, s)
			}
		}
	default:
		return fmt.Errorf("example %v is neither a string nor a number", jsonText(example))
	}
	if r, ok := b.real[example]; ok {
		if r != got {
			return fmt.Errorf("%v stands for %v, the value first sent, but the server sent %v", example, r, got)
		}
		return nil
	}
	if e, ok := b.example[got]; ok {
		return fmt.Errorf("the server sent %v for %v and for %v: two examples, one value", got, e, example)
	}
	b.real[example], b.example[got] = got, example
	return nil
}

// match compares a server frame with the document's: the same fields
// (exactly), the same values, and the opaque fields through the bindings.
func (b *bindings) match(want, got any, field string) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %v", field, got)
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				return fmt.Errorf("field %q is not in the document", k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(w)) {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("field %q is missing", k)
			}
			if err := b.match(w[k], gv, k); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: want %d elements, got %v", field, len(w), got)
		}
		for i := range w {
			if err := b.match(w[i], g[i], field+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		return nil
	}
	if opaqueFields[field] {
		if err := b.bind(want, got); err != nil {
			return fmt.Errorf("%s: %v", field, err)
		}
		return nil
	}
	if !reflect.DeepEqual(want, got) {
		return fmt.Errorf("%s: want %v, got %v", field, jsonText(want), jsonText(got))
	}
	return nil
}

// substitute replaces, in a client frame or a server call's argument, the
// example values already bound by the server's.
func (b *bindings) substitute(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = b.substitute(e)
		}
	case []any:
		for i, e := range v {
			v[i] = b.substitute(e)
		}
	case string:
		if r, ok := b.real[v].(string); ok {
			return r
		}
	}
	return v
}

func jsonText(v any) string {
	p, _ := json.Marshal(v)
	return string(p)
}

func decodeJSON(p []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%q is not JSON: %v", p, err)
	}
	return v, nil
}

// --- Running an exchange ---

// viewer is the exchange's own connection, of either transport.
type viewer interface {
	// next returns the next server frame and, over SSE, its event's id:
	// field (nil when it has none).
	next() (frame []byte, sseID *string, err error)
	close()
}

// run is one exchange running over one transport.
type run struct {
	tr       string // "websocket" or "sse"
	b        *Broker
	srv      *httptest.Server
	bind     *bindings
	v        viewer
	user     string
	conn     string // the viewer's connection id, from its welcome
	closed   bool   // the exchange ended its connection
	peers    map[string][]*peer
	shutdown chan error // a Shutdown under way
}

func runExchange(t *testing.T, x exchange, tr string) {
	b, srv := conformanceServer(t)
	r := &run{tr: tr, b: b, srv: srv, bind: newBindings(), peers: map[string][]*peer{}}
	t.Cleanup(func() {
		for _, ps := range r.peers {
			for _, p := range ps {
				p.close()
			}
		}
		if r.v != nil {
			r.v.close()
		}
	})
	for i := 0; i < len(x.steps); i++ {
		st := x.steps[i]
		var err error
		switch st.kind {
		case stepConnect:
			err = r.connect(st)
		case stepHangUp:
			r.v.close()
			r.v, r.closed = nil, true
		case stepSend:
			err = r.send(st)
		case stepExpect:
			j := i + 1
			for st.anyOrder && j < len(x.steps) && x.steps[j].kind == stepExpect && x.steps[j].anyOrder {
				j++
			}
			err = r.expect(x.steps[i:j])
			i = j - 1
		case stepClose:
			err = r.expectClose(st)
		case stepCall:
			err = r.call(st)
		case stepPeer:
			err = r.peer(st)
		}
		if err != nil {
			t.Fatalf("PROTOCOL.md:%d (%s): %v", st.line, tr, err)
		}
	}
	if !r.closed {
		// Nothing else was on its way: a message sent last, on the
		// connection's own path, is the next frame.
		if err := r.b.SendToConn(ctx, r.conn, []byte(`"end of exchange"`)); err != nil {
			t.Fatal(err)
		}
		if err := r.expect([]step{{frame: []byte(`{"type":"direct","id":"end-of-exchange","to":"conn","data":"end of exchange"}`)}}); err != nil {
			t.Fatalf("PROTOCOL.md:%d (%s), after the exchange's last line: %v", x.steps[len(x.steps)-1].line, tr, err)
		}
	}
	if r.shutdown != nil {
		select {
		case err := <-r.shutdown:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(2 * testkit.Wait):
			t.Fatal("Shutdown did not return")
		}
	}
}

func (r *run) header(user string, session time.Duration) http.Header {
	h := http.Header{}
	if user != "" {
		h.Set("X-User", user)
	}
	if session > 0 {
		h.Set("X-Session-Ends", strconv.FormatInt(time.Now().Add(session).UnixMilli(), 10))
	}
	return h
}

func (r *run) connect(st step) error {
	r.user, r.conn, r.closed = st.user, "", false
	h := r.header(st.user, st.session)
	if r.tr == "websocket" {
		dctx, cancel := context.WithTimeout(ctx, testkit.Wait)
		defer cancel()
		c, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(r.srv.URL, "http")+st.target, &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			return err
		}
		c.SetReadLimit(1 << 20)
		r.v = &wsViewer{c: c}
		return nil
	}
	s, err := dialEventStream(r.srv.Client(), r.srv.URL+st.target, h)
	if err != nil {
		return err
	}
	r.v = &sseViewer{s}
	return nil
}

// send sends a client frame: a WebSocket message, or a POST with "conn"
// answered 202 {"type":"accepted"} (PROTOCOL.md §1, §5).
func (r *run) send(st step) error {
	v, err := decodeJSON(st.frame)
	if err != nil {
		return err
	}
	frame, ok := r.bind.substitute(v).(map[string]any)
	if !ok {
		return errors.New("a client frame is a JSON object")
	}
	if r.tr == "websocket" {
		wctx, cancel := context.WithTimeout(ctx, testkit.Wait)
		defer cancel()
		return r.v.(*wsViewer).c.Write(wctx, websocket.MessageText, []byte(jsonText(frame)))
	}
	if r.conn == "" {
		return errors.New("a client frame before the welcome")
	}
	frame["conn"] = r.conn
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+"/live", strings.NewReader(jsonText(frame)))
	req.Header = r.header(r.user, 0)
	req.Header.Set("Content-Type", "application/json")
	pctx, cancel := context.WithTimeout(ctx, testkit.Wait)
	defer cancel()
	resp, err := r.srv.Client().Do(req.WithContext(pctx))
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted || strings.TrimSpace(string(body)) != `{"type":"accepted"}` {
		return fmt.Errorf("POST %s: %s %q (Roomcast-Error %q), want 202 {\"type\":\"accepted\"}", jsonText(frame), resp.Status, body, resp.Header.Get("Roomcast-Error"))
	}
	return nil
}

// expect reads len(want) frames, which must match want in order, or in
// any order for a group of "(in any order)" lines.
func (r *run) expect(want []step) error {
	left := slices.Clone(want)
	for range want {
		p, sseID, err := r.v.next()
		if err != nil {
			return fmt.Errorf("waiting for %s: %v", left[0].frame, err)
		}
		got, err := decodeJSON(p)
		if err != nil {
			return err
		}
		var errs []error
		matched := -1
		for i, w := range left {
			wv, err := decodeJSON(w.frame)
			if err != nil {
				return err
			}
			trial := r.bind.clone()
			if err := trial.match(wv, got, "frame"); err != nil {
				errs = append(errs, fmt.Errorf("PROTOCOL.md:%d %s: %v", w.line, w.frame, err))
				continue
			}
			r.bind, matched = trial, i
			break
		}
		if matched < 0 {
			return fmt.Errorf("the server sent %s:\n%v", p, errors.Join(errs...))
		}
		left = slices.Delete(left, matched, matched+1)
		f := got.(map[string]any)
		if f["type"] == "welcome" {
			r.conn, _ = f["conn"].(string)
		}
		if err := checkEventID(f, sseID, r.tr); err != nil {
			return fmt.Errorf("%s: %v", p, err)
		}
	}
	return nil
}

// checkEventID checks an SSE event's id: field (PROTOCOL.md §3): the
// message's id for a message of a room with history, absent otherwise.
func checkEventID(f map[string]any, sseID *string, tr string) error {
	if tr != "sse" {
		return nil
	}
	room, _ := f["room"].(string)
	if f["type"] == "message" && isHistoryRoom(room) {
		if sseID == nil || *sseID != f["id"] {
			return fmt.Errorf("a message of a room with history has the SSE id %v, want its id", sseID)
		}
		return nil
	}
	if sseID != nil {
		return fmt.Errorf("an SSE id: field %q on an event that is not a stored message", *sseID)
	}
	return nil
}

// expectClose checks the end of the connection: a WebSocket close frame,
// or an SSE close event and the end of the stream.
func (r *run) expectClose(st step) error {
	r.closed = true
	p, _, err := r.v.next()
	if r.tr == "websocket" {
		var ce websocket.CloseError
		switch {
		case err == nil:
			return fmt.Errorf("got %s, want close %d", p, st.code)
		case !errors.As(err, &ce):
			return fmt.Errorf("got %v, want close %d", err, st.code)
		case int(ce.Code) != st.code || ce.Reason != st.reason:
			return fmt.Errorf("closed with %d %q, want %d %q", ce.Code, ce.Reason, st.code, st.reason)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("waiting for the close event: %v", err)
	}
	want := fmt.Sprintf(`{"type":"close","code":%d,"reason":%s}`, st.code, strconv.Quote(st.reason))
	if err := r.expectParsed(want, p); err != nil {
		return err
	}
	if p, _, err := r.v.next(); err != io.EOF {
		return fmt.Errorf("after the close event: %s %v, want the end of the stream", p, err)
	}
	return nil
}

func (r *run) expectParsed(want string, p []byte) error {
	wv, _ := decodeJSON([]byte(want))
	got, err := decodeJSON(p)
	if err != nil {
		return err
	}
	if err := r.bind.match(wv, got, "frame"); err != nil {
		return fmt.Errorf("the server sent %s, want %s: %v", p, want, err)
	}
	return nil
}

// call runs server code: a method of the broker.
func (r *run) call(st step) error {
	a := make([]string, len(st.args))
	for i, s := range st.args {
		a[i] = r.bind.substitute(s).(string)
	}
	arity := map[string]int{"Publish": 2, "SendToUser": 2, "SendToConn": 2, "SendToInbox": 2,
		"SubscribeUser": 2, "SubscribeConn": 2, "UnsubscribeUser": 2, "UnsubscribeConn": 2,
		"DisconnectUser": 2, "DisconnectConn": 2, "Shutdown": 0}
	if n, ok := arity[st.method]; !ok || n != len(a) {
		return fmt.Errorf("server call %s with %d arguments: not in the vocabulary %v", st.method, len(a), slices.Sorted(maps.Keys(arity)))
	}
	cctx, cancel := context.WithTimeout(ctx, testkit.Wait)
	defer cancel()
	var err error
	switch st.method {
	case "Publish":
		err = r.b.Publish(cctx, a[0], []byte(a[1]))
	case "SendToUser":
		err = r.b.SendToUser(cctx, a[0], []byte(a[1]))
	case "SendToConn":
		err = r.b.SendToConn(cctx, a[0], []byte(a[1]))
	case "SendToInbox":
		_, err = r.b.SendToInbox(cctx, a[0], []byte(a[1]))
	case "SubscribeUser":
		_, err = r.b.SubscribeUser(cctx, a[0], a[1])
	case "SubscribeConn":
		err = r.b.SubscribeConn(cctx, a[0], a[1])
	case "UnsubscribeUser":
		_, err = r.b.UnsubscribeUser(cctx, a[0], a[1])
	case "UnsubscribeConn":
		err = r.b.UnsubscribeConn(cctx, a[0], a[1])
	case "DisconnectUser":
		_, err = r.b.DisconnectUser(cctx, a[0], Disconnect{Reason: a[1]})
	case "DisconnectConn":
		err = r.b.DisconnectConn(cctx, a[0], Disconnect{Reason: a[1]})
	case "Shutdown":
		// It returns once the connections are closed, which needs
		// the client to read its close frame: the exchange goes on.
		r.shutdown = make(chan error, 1)
		go func() {
			sctx, cancel := context.WithTimeout(ctx, 2*testkit.Wait)
			defer cancel()
			r.shutdown <- r.b.Shutdown(sctx)
		}()
	}
	return err
}

// peer acts as another user, on WebSocket connections whose frames the
// exchange does not show.
func (r *run) peer(st step) error {
	switch st.peerDo {
	case "GET":
		dctx, cancel := context.WithTimeout(ctx, testkit.Wait)
		defer cancel()
		c, _, err := testkit.DialWS(dctx, "ws"+strings.TrimPrefix(r.srv.URL, "http")+st.target, &websocket.DialOptions{HTTPHeader: r.header(st.user, 0)})
		if err != nil {
			return err
		}
		u, _ := url.Parse(st.target)
		for range u.Query()["room"] { // its rooms are joined: it is in them
			if f, err := c.NextErr(testkit.Wait); err != nil || f.Type != "subscribed" {
				c.Cut()
				return fmt.Errorf("%s's connection: %+v %v, want subscribed", st.user, f, err)
			}
		}
		r.peers[st.user] = append(r.peers[st.user], startPeer(c.Conn))
	case "frame":
		ps := r.peers[st.user]
		if len(ps) == 0 {
			return fmt.Errorf("%s has no connection", st.user)
		}
		v, err := decodeJSON(st.frame)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, testkit.Wait)
		defer cancel()
		return ps[len(ps)-1].c.Write(wctx, websocket.MessageText, []byte(jsonText(r.bind.substitute(v))))
	case "close":
		for _, p := range r.peers[st.user] {
			p.close()
		}
		delete(r.peers, st.user)
	}
	return nil
}

// peer is another user's connection. It reads, and drops, what it is
// sent, as a client must (PROTOCOL.md §3: it answers pings and close
// frames meanwhile).
type peer struct {
	c    *websocket.Conn
	done chan struct{}
}

func startPeer(c *websocket.Conn) *peer {
	p := &peer{c: c, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return p
}

func (p *peer) close() {
	_ = p.c.CloseNow()
	<-p.done
}

// wsViewer reads server frames from a WebSocket: one message may carry
// several, one per line.
type wsViewer struct {
	c       *websocket.Conn
	pending [][]byte
}

func (w *wsViewer) next() ([]byte, *string, error) {
	if len(w.pending) == 0 {
		rctx, cancel := context.WithTimeout(ctx, testkit.Wait)
		defer cancel()
		typ, p, err := w.c.Read(rctx)
		if err != nil {
			return nil, nil, err
		}
		if typ != websocket.MessageText {
			return nil, nil, fmt.Errorf("a binary message %q", p)
		}
		w.pending = bytes.Split(p, []byte("\n"))
	}
	f := w.pending[0]
	w.pending = w.pending[1:]
	return f, nil, nil
}

// close closes the connection as a client does: a close frame, and the
// server's answer (or its end after 5 s).
func (w *wsViewer) close() { _ = w.c.Close(websocket.StatusNormalClosure, "") }

// sseViewer reads server frames from an event stream: one event each.
type sseViewer struct{ s *eventStream }

func (v *sseViewer) next() ([]byte, *string, error) {
	for {
		block, err := v.s.nextBlock(testkit.Wait)
		if err != nil {
			return nil, nil, err
		}
		ev, err := parseEvent(block)
		switch {
		case err != nil:
			return nil, nil, err
		case ev.data == nil: // the retry: line, a keep-alive comment
			continue
		}
		return ev.data, ev.id, nil
	}
}

func (v *sseViewer) close() { v.s.close() }

// event is one block of an event stream.
type event struct {
	data []byte  // nil: no data line (a retry: line, a comment)
	id   *string // the id: field
}

func parseEvent(block []string) (event, error) {
	var ev event
	for _, l := range block {
		switch {
		case strings.HasPrefix(l, "data: "):
			if ev.data != nil {
				return ev, fmt.Errorf("an event of several data lines: %q", block)
			}
			ev.data = []byte(l[len("data: "):])
		case strings.HasPrefix(l, "id: "):
			id := l[len("id: "):]
			ev.id = &id
		case strings.HasPrefix(l, "retry: "), strings.HasPrefix(l, ":"):
		default:
			return ev, fmt.Errorf("an unexpected SSE line %q", l)
		}
	}
	return ev, nil
}

// eventStream is an SSE response read as blocks: the lines up to each
// blank line, as they arrive.
type eventStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	blocks chan []string
	done   chan struct{}
}

func dialEventStream(client *http.Client, u string, h http.Header) (*eventStream, error) {
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header = h
	req.Header.Set("Accept", "text/event-stream")
	slow := time.AfterFunc(testkit.Wait, cancel)
	resp, err := client.Do(req)
	slow.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s %s (Roomcast-Error %q)", u, resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Roomcast-Error"))
	}
	s := &eventStream{resp: resp, cancel: cancel, blocks: make(chan []string, 1024), done: make(chan struct{})}
	go s.read()
	return s, nil
}

func (s *eventStream) read() {
	defer close(s.done)
	defer close(s.blocks)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var block []string
	for sc.Scan() {
		if sc.Text() != "" {
			block = append(block, sc.Text())
			continue
		}
		if block != nil {
			s.blocks <- block
			block = nil
		}
	}
}

// nextBlock returns the next block, io.EOF once the stream has ended.
func (s *eventStream) nextBlock(d time.Duration) ([]string, error) {
	select {
	case b, ok := <-s.blocks:
		if !ok {
			return nil, io.EOF
		}
		return b, nil
	case <-time.After(d):
		return nil, fmt.Errorf("nothing in %v", d)
	}
}

func (s *eventStream) close() {
	s.cancel()
	s.resp.Body.Close()
	for range s.blocks { // the reader may wait to hand one over
	}
	<-s.done
}

// --- §3's event stream ---

// checkStreamExample runs the raw event stream of PROTOCOL.md §3 (the
// ```sse block): its welcome names the user, its subscribed events the
// rooms of the query, and each message without "from" is published by
// server code when its turn comes. The live stream must have the same
// blocks: retry: first, id: exactly on the messages of the room with
// history, a keep-alive comment where the example ends with one (others
// may come anywhere: the stream is idle between events).
func checkStreamExample(t *testing.T, doc string) {
	start := strings.Index(doc, "\n```sse\n")
	if start < 0 {
		t.Fatal("PROTOCOL.md has no ```sse block")
	}
	first := strings.Count(doc[:start], "\n") + 3 // the block's first line
	body := doc[start+len("\n```sse\n"):]
	body = body[:strings.Index(body, "\n```")]
	var want [][]string // blocks
	var lines []int     // the line of each block
	for i, l := range strings.Split(body, "\n") {
		if l == "" {
			continue
		}
		if i == 0 || strings.Split(body, "\n")[i-1] == "" {
			want, lines = append(want, nil), append(lines, first+i)
		}
		want[len(want)-1] = append(want[len(want)-1], l)
	}
	var user string
	q := url.Values{}
	for _, bl := range want {
		ev, err := parseEvent(bl)
		if err != nil || ev.data == nil {
			continue
		}
		var f struct{ Type, User, Room string }
		_ = json.Unmarshal(ev.data, &f)
		switch f.Type {
		case "welcome":
			user = f.User
		case "subscribed":
			q.Add("room", f.Room)
		}
	}
	b, srv := conformanceServer(t)
	s, err := dialEventStream(srv.Client(), srv.URL+"/live?"+q.Encode(), (&run{}).header(user, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	r := &run{tr: "sse", b: b, bind: newBindings()}
	for i, wb := range want {
		wev, err := parseEvent(wb)
		if err != nil {
			t.Fatalf("PROTOCOL.md:%d: %v", lines[i], err)
		}
		if wev.data != nil {
			var f struct{ Type, Room, From string }
			_ = json.Unmarshal(wev.data, &f)
			var d struct{ Data json.RawMessage }
			_ = json.Unmarshal(wev.data, &d)
			if f.Type == "message" && f.From == "" {
				if err := b.Publish(ctx, f.Room, d.Data); err != nil {
					t.Fatal(err)
				}
			}
		}
		for {
			gb, err := s.nextBlock(testkit.Wait)
			if err != nil {
				t.Fatalf("PROTOCOL.md:%d: waiting for %q: %v", lines[i], wb, err)
			}
			if i > 0 && len(gb) == 1 && gb[0] == ":" && !(len(wb) == 1 && wb[0] == ":") {
				continue // a keep-alive while idle
			}
			if err := r.matchBlock(wb, gb); err != nil {
				t.Fatalf("PROTOCOL.md:%d: the stream sent %q, want %q: %v", lines[i], gb, wb, err)
			}
			break
		}
	}
}

// matchBlock compares a block of the live stream with the document's:
// the same lines, ids and data through the bindings.
func (r *run) matchBlock(want, got []string) error {
	if len(want) != len(got) {
		return errors.New("not the same lines")
	}
	for i := range want {
		wk, wv, _ := strings.Cut(want[i], ": ")
		gk, gv, _ := strings.Cut(got[i], ": ")
		switch {
		case wk != gk:
			return fmt.Errorf("line %d is not a %q line", i+1, wk)
		case wk == "id":
			if err := r.bind.bind(wv, gv); err != nil {
				return err
			}
		case wk == "data":
			if err := r.expectParsed(wv, []byte(gv)); err != nil {
				return err
			}
		case want[i] != got[i]:
			return fmt.Errorf("line %d differs", i+1)
		}
	}
	return nil
}
