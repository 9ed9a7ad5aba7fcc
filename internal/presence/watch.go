package presence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/roomcast/pubsub/internal/wire"
)

// Watcher is a connection that receives a room's presence frame, then its
// join and leave events.
type Watcher interface {
	// Deliver queues f, reporting false when the connection's queue is full.
	Deliver(f *wire.Frame) bool
	// Overflowed closes the connection as a slow consumer; it is called in
	// a goroutine of its own.
	Overflowed()
}

// Errors of Page and Watch.
var (
	ErrClosed = errors.New("presence: closed")
	// ErrTooManyRooms: the instance already keeps MaxViews views.
	ErrTooManyRooms = fmt.Errorf("presence is kept for at most %d rooms per instance", MaxViews)
	// ErrTooManyRoomsForUser: the asker has made MaxViewsPerAsker views
	// that are still kept.
	ErrTooManyRoomsForUser = fmt.Errorf("presence is kept for at most %d rooms per user at a time", MaxViewsPerAsker)
)

// MaxViewsPerAsker bounds the views one asker (a user, or an anonymous
// connection) has made and that are still kept, so that one of them
// cannot take the instance's MaxViews for itself.
const MaxViewsPerAsker = MaxViews / 10

// MaxViews bounds the rooms an instance keeps presence views of (watched,
// or asked about in the last linger), so that clients asking about ever new
// rooms cannot grow it without end.
const MaxViews = 10000

// readyTimeout bounds the wait for every instance's first snapshot.
const readyTimeout = 2 * time.Second

// acquire returns the view of room, created and synchronized with every
// known instance (or after readyTimeout) on first use. The caller must
// release it.
//
// asker is who asks ("" for the host's Go code, which is not limited): a
// new view counts against its MaxViewsPerAsker until the view goes.
func (p *Tracker) acquire(ctx context.Context, room, asker string) (*roomView, error) {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	r := p.views[room]
	if r == nil {
		if len(p.views) >= MaxViews {
			p.mu.Unlock()
			return nil, ErrTooManyRooms
		}
		if asker != "" && p.madeBy[asker] >= MaxViewsPerAsker {
			p.mu.Unlock()
			return nil, ErrTooManyRoomsForUser
		}
		sub, err := p.cfg.NC.ChanSubscribe(p.cfg.Subjects.Presence(room), p.inbox)
		if err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("presence: %w", err)
		}
		r = &roomView{
			room: room, sub: sub,
			instances: make(map[string]*instanceUsers),
			snapshots: make(map[string]map[string]int),
			users:     make(map[string]int),
			watchers:  make(map[Watcher]struct{}),
			waiting:   make(map[string]bool),
			ready:     make(chan struct{}),
			madeBy:    asker,
		}
		if asker != "" {
			p.madeBy[asker]++
		}
		for inst := range p.live {
			r.waiting[inst] = true
		}
		p.views[room] = r
		p.bySubject[sub.Subject] = r
		r.refs++
		p.mu.Unlock()
		// The subscription must be in place before the query goes out, or
		// an answer could pass it by.
		if err := p.cfg.NC.FlushTimeout(p.cfg.FlushTimeout); err != nil {
			p.cfg.Log.Warn("pubsub: presence subscribe", "room", room, "err", err)
		}
		p.mu.Lock()
		r.refs--
		p.query(r)
		time.AfterFunc(readyTimeout, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if !r.isReady {
				p.cfg.Log.Debug("pubsub: presence: instances did not answer in time", "room", room, "missing", len(r.waiting))
				clear(r.waiting)
				r.checkReady()
			}
		})
	}
	r.refs++
	p.mu.Unlock()
	select {
	case <-r.ready:
		return r, nil
	case <-ctx.Done():
		p.release(r)
		return nil, ctx.Err()
	}
}

func (p *Tracker) release(r *roomView) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.unref()
}

// Page returns the counts of room, on every instance, and the page of at
// most limit members whose user ids sort after after. The first call for a
// room gathers a snapshot from every instance (one round trip); later
// calls are answered from memory, kept current by the changes.
func (p *Tracker) Page(ctx context.Context, room, asker, after string, limit int) (wire.PresencePage, error) {
	r, err := p.acquire(ctx, room, asker)
	if err != nil {
		return wire.PresencePage{}, err
	}
	defer p.release(r)
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.page(after, limit), nil
}

// Watch makes w receive room's join and leave events, after a presence
// frame with the room's first page (so no event is missed in between).
// admit is w's own check, run with the tracker locked: w must still be in
// the room and open. Watching a room twice is watching it once.
func (p *Tracker) Watch(ctx context.Context, w Watcher, room, asker string, admit func() bool) error {
	r, err := p.acquire(ctx, room, asker)
	if err != nil {
		return err
	}
	p.sync(ctx, room)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watches[w][room] != nil || !admit() {
		r.unref()
		return nil
	}
	if p.watches[w] == nil {
		p.watches[w] = make(map[string]*roomView)
	}
	p.watches[w][room] = r
	r.watchers[w] = struct{}{}
	if !w.Deliver(wire.PresenceFrame(room, r.page("", DefaultPage), nil)) {
		go w.Overflowed()
	}
	return nil
}

// sync waits until the view of room has every change this instance made
// in it so far, so that a client's first presence frame includes its own
// connection: a marker published after them comes back after them.
func (p *Tracker) sync(ctx context.Context, room string) {
	p.mu.Lock()
	p.nextSync++
	token, ch := p.nextSync, make(chan struct{})
	p.syncs[token] = ch
	p.mu.Unlock()
	p.localMu.Lock() // ordered after changes being published
	p.publish(p.cfg.Subjects.Presence(room), &message{Kind: "sync", Instance: p.cfg.Instance, Room: room, Seq: token})
	p.localMu.Unlock()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return
	case <-ctx.Done():
	case <-t.C:
	}
	p.mu.Lock()
	delete(p.syncs, token)
	p.mu.Unlock()
}

// Unwatch stops w's events of room.
func (p *Tracker) Unwatch(w Watcher, room string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.watches[w][room]; r != nil {
		delete(p.watches[w], room)
		if len(p.watches[w]) == 0 {
			delete(p.watches, w)
		}
		delete(r.watchers, w)
		r.unref()
	}
}

// UnwatchAll stops all of w's events: the connection closed.
func (p *Tracker) UnwatchAll(w Watcher) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.watches[w] {
		delete(r.watchers, w)
		r.unref()
	}
	delete(p.watches, w)
}
