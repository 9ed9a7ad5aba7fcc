// Command roomcast talks to a roomcast/pubsub endpoint from a terminal, as
// `nats sub` does to NATS: subscribe, publish, read presence and history,
// call a server method. It uses the Go client (package client): the same
// reconnects, resumes and errors as the browser client.
//
//	roomcast sub http://127.0.0.1:8080/live lobby --cookie demo_session=…
//	roomcast pub http://127.0.0.1:8080/live lobby '{"text":"hi"}' --cookie …
//	roomcast presence URL lobby [--watch]
//	roomcast history URL chat:general [-n 20]
//	roomcast call URL method ['{"json":"data"}']
//
// Flags may come before or after the arguments. Authentication is the
// host's: pass its cookie (--cookie name=value) or a header (--header
// "Authorization: Bearer …"), repeatable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/roomcast/pubsub/client"
)

const usage = `usage: roomcast <command> URL args... [flags]

commands:
  sub URL ROOM...           print the rooms' messages (and direct ones) until interrupted
  pub URL ROOM DATA         publish DATA (JSON; "-": one message per line of stdin)
  presence URL ROOM         print who is in ROOM (--watch: then joins and leaves)
  history URL ROOM          print ROOM's last stored messages (-n: how many)
  call URL METHOD [DATA]    call a server method and print its reply

URL is where the app mounts the handler, e.g. http://127.0.0.1:8080/live.
`

// headers is a repeatable flag.
type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type config struct {
	headers, cookies headers
	transport        string
	json             bool
	presence, watch  bool
	text             bool
	after, key       string
	n                int
}

// Exit codes: 0 done (sub: interrupted), 1 an error, 2 a usage error, 130
// interrupted before the command was done.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the process at once
	}()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	var usage usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return
	case ctx.Err() != nil:
		os.Exit(130)
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "roomcast:", err)
		os.Exit(2)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "roomcast:") {
		msg = "roomcast: " + msg
	}
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(1)
}

// usageError is a command line that does not say what to do.
type usageError string

func (e usageError) Error() string { return string(e) }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("roomcast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage, "\nflags:\n"); fs.PrintDefaults() }
	fs.Var(&cfg.headers, "header", "a request header `\"Name: value\"` (repeatable)")
	fs.Var(&cfg.cookies, "cookie", "a cookie `name=value` (repeatable)")
	fs.StringVar(&cfg.transport, "transport", "auto", "auto, websocket or sse")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object per line")
	fs.BoolVar(&cfg.presence, "presence", false, "sub: also print joins and leaves")
	fs.BoolVar(&cfg.watch, "watch", false, "presence: then follow joins and leaves")
	fs.BoolVar(&cfg.text, "text", false, "pub, call: DATA is text, sent as a JSON string")
	fs.StringVar(&cfg.after, "after", "", "sub: resume after this message id (rooms with history)")
	fs.StringVar(&cfg.key, "key", "", "pub: the idempotency key (default: a random one per message; with DATA -, line n gets KEY-n)")
	fs.IntVar(&cfg.n, "n", 50, "history: how many messages (at most 100)")
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return usageError(err.Error())
	}
	if len(pos) < 2 {
		fs.Usage()
		return usageError("want a command and a URL")
	}
	cmd, url, rest := pos[0], pos[1], pos[2:]
	need := map[string]int{"sub": 1, "pub": 2, "presence": 1, "history": 1, "call": 1}[cmd]
	if need == 0 {
		return usageError(fmt.Sprintf("unknown command %q (sub, pub, presence, history, call)", cmd))
	}
	if len(rest) < need {
		return usageError(fmt.Sprintf("%s: want %d more argument(s) after the URL", cmd, need))
	}
	o, err := options(&cfg, stderr)
	if err != nil {
		return usageError(err.Error())
	}
	c, err := client.Dial(ctx, url, o)
	var ce *client.CloseError
	if errors.As(err, &ce) && (ce.Status == http.StatusUnauthorized || ce.Status == http.StatusForbidden) {
		return fmt.Errorf("%w: the host refused the request; pass its session (--cookie name=value, or --header \"Authorization: …\")", err)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	out := &printer{w: stdout, errw: stderr, json: cfg.json}
	switch cmd {
	case "sub":
		return sub(ctx, c, rest, &cfg, out)
	case "pub":
		return pub(ctx, c, rest[0], rest[1], stdin, &cfg, out)
	case "presence":
		return presence(ctx, c, rest[0], cfg.watch, out)
	case "history":
		msgs, err := c.History(ctx, rest[0], cfg.n)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			out.message(m)
		}
		return nil
	default: // call
		data := "null"
		if len(rest) > 1 {
			data = rest[1]
		}
		d, err := jsonArg(data, cfg.text)
		if err != nil {
			return err
		}
		reply, err := c.Call(ctx, rest[0], d)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(reply))
		return nil
	}
}

// parseInterleaved parses flags wherever they are among the arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func options(cfg *config, stderr io.Writer) (*client.Options, error) {
	o := &client.Options{Header: http.Header{}, Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, h := range cfg.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("--header %q: want \"Name: value\"", h)
		}
		o.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	for _, ck := range cfg.cookies {
		if !strings.Contains(ck, "=") {
			return nil, fmt.Errorf("--cookie %q: want name=value", ck)
		}
		if prev := o.Header.Get("Cookie"); prev != "" {
			ck = prev + "; " + ck
		}
		o.Header.Set("Cookie", ck)
	}
	switch cfg.transport {
	case "auto":
	case "websocket", "ws":
		o.Transport = client.WebSocket
	case "sse":
		o.Transport = client.SSE
	default:
		return nil, fmt.Errorf("--transport %q: auto, websocket or sse", cfg.transport)
	}
	return o, nil
}
