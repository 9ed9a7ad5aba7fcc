package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"sync"

	"github.com/roomcast/pubsub/client"
)

// sub prints the rooms' messages, and the direct ones, until ctx ends (then
// it returns nil) or the server ends the client for good.
func sub(ctx context.Context, c *client.Client, rooms []string, cfg *config, out *printer) error {
	var opts []client.SubscribeOption
	if cfg.presence {
		opts = append(opts, client.WithPresence())
	}
	if cfg.after != "" {
		opts = append(opts, client.WithLastID(cfg.after))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		final error
	)
	fail := func(err error) { once.Do(func() { final = err; cancel() }) }
	// An iteration ends by itself after its final error; the errors before
	// it (truncated, dropped, store_failed) are news.
	follow := func(seq iter.Seq2[client.Message, error]) {
		var last error // printed once the iteration goes on after it
		for m, err := range seq {
			if last != nil {
				out.warn(last)
				last = nil
			}
			if err != nil {
				last = err
				continue
			}
			out.message(m)
		}
		if ctx.Err() == nil && last != nil {
			fail(last)
		}
	}
	for _, room := range rooms {
		s, err := c.Subscribe(ctx, room, opts...)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("subscribe %s: %w", room, err)
		}
		wg.Go(func() { follow(s.Messages(ctx)) })
		if cfg.presence {
			wg.Go(func() {
				for ev, err := range s.Presence(ctx) {
					if err != nil {
						return // the messages' iterator says why
					}
					out.presenceEvent(ev)
				}
			})
		}
	}
	wg.Go(func() { follow(c.Messages(ctx)) })
	wg.Wait()
	return final
}

// pub publishes data, or each line of stdin when data is "-" (with --key K,
// line n carries the key K-n: the same input sent again is stored once).
func pub(ctx context.Context, c *client.Client, room, data string, stdin io.Reader, cfg *config, out *printer) error {
	one := func(s, key string) error {
		d, err := jsonArg(s, cfg.text)
		if err != nil {
			return err
		}
		var id string
		if key != "" {
			id, err = c.PublishOnce(ctx, room, key, d)
		} else {
			id, err = c.Publish(ctx, room, d)
		}
		if err != nil {
			return err
		}
		out.published(room, id)
		return nil
	}
	if data != "-" {
		return one(data, cfg.key)
	}
	// Lines come from a goroutine so that Ctrl-C is heard while stdin is
	// quiet; it ends at stdin's end, with the process.
	lines := make(chan string)
	errc := make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		errc <- sc.Err()
	}()
	for n := 1; ; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case line, ok := <-lines:
			if !ok {
				return <-errc
			}
			if line == "" {
				continue
			}
			key := ""
			if cfg.key != "" {
				key = fmt.Sprintf("%s-%d", cfg.key, n)
			}
			n++
			if err := one(line, key); err != nil {
				return err
			}
		}
	}
}

// presence prints the room's members, every page, then follows it if asked.
func presence(ctx context.Context, c *client.Client, room string, watch bool, out *printer) error {
	if watch {
		s, err := c.Subscribe(ctx, room, client.WithPresence())
		if err != nil {
			return err
		}
		for ev, err := range s.Presence(ctx) {
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			out.presenceEvent(ev)
		}
		return nil
	}
	q := client.PresenceQuery{Limit: 1000}
	for {
		p, err := c.Presence(ctx, room, q)
		if err != nil {
			return err
		}
		out.presence(p, q.After == "")
		if p.Next == "" {
			return nil
		}
		q.After = p.Next
	}
}

// jsonArg is a command-line argument as JSON data: JSON as given, or, with
// --text, the text as a JSON string. Anything else is an error rather than
// a guess.
func jsonArg(s string, text bool) (json.RawMessage, error) {
	if text {
		return json.Marshal(s)
	}
	if !json.Valid([]byte(s)) {
		return nil, fmt.Errorf("DATA is not JSON: %q (add --text to send it as a string)", s)
	}
	return json.RawMessage(s), nil
}

// printer writes what the commands print, one line each, from several
// goroutines.
type printer struct {
	mu   sync.Mutex
	w    io.Writer
	errw io.Writer // news: truncated, dropped
	json bool
}

func (p *printer) line(v any, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(v)
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *printer) message(m client.Message) {
	where := m.Room
	if where == "" {
		where = "to " + m.To
	}
	from := ""
	if m.From != "" {
		from = m.From + ": "
	}
	typ := "message"
	if m.Room == "" {
		typ = "direct"
	}
	p.line(struct {
		Type string          `json:"type"`
		Room string          `json:"room,omitempty"`
		To   string          `json:"to,omitempty"`
		ID   string          `json:"id"`
		From string          `json:"from,omitempty"`
		Data json.RawMessage `json:"data"`
	}{typ, m.Room, m.To, m.ID, m.From, m.Data}, "[%s #%s] %s%s", where, m.ID, from, m.Data)
}

func (p *printer) presenceEvent(ev client.PresenceEvent) {
	if ev.Snapshot != nil {
		p.presence(ev.Snapshot, true)
		return
	}
	p.line(ev, "[%s] %s %s (%d users)", ev.Room, ev.User, map[string]string{"join": "joined", "leave": "left"}[ev.Type], ev.Count)
}

func (p *printer) presence(pr *client.Presence, head bool) {
	if p.json {
		p.line(struct {
			Type string `json:"type"`
			*client.Presence
		}{"presence", pr}, "")
		return
	}
	if head {
		p.line(nil, "[%s] %d users, %d connections", pr.Room, pr.Count, pr.Conns)
	}
	for _, m := range pr.Members {
		p.line(nil, "  %s (%d)", m.User, m.Conns)
	}
}

func (p *printer) published(room, id string) {
	p.line(map[string]string{"type": "published", "room": room, "id": id}, "published to %s: #%s", room, id)
}

func (p *printer) warn(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.errw, "roomcast:", err)
}
