package client

import (
	"context"
	"sync"
)

// item is one thing an iterator yields: a value, or an error that the
// iteration goes on after (truncated, dropped).
type item[T any] struct {
	v   T
	err error
}

// queue is the bounded buffer between the connection's reader, which must
// never block, and an iterator. When it is full the newest items are
// dropped and the reader counts them; the iterator then yields a
// *DroppedError where they were.
type queue[T any] struct {
	mu      sync.Mutex
	items   []item[T]
	limit   int         // items
	bytes   int         // held now, by size
	size    func(T) int // an item's bytes, against maxQueueBytes
	dropped int
	final   error         // set once: the iterators end with it after the items
	wake    chan struct{} // an item came
	ended   chan struct{} // closed with final: every waiting iterator sees it
}

// maxQueueBytes bounds what an iterator's queue holds whatever its count,
// like the server's 4 MiB per connection.
const maxQueueBytes = 4 << 20

func newQueue[T any](limit int, size func(T) int) *queue[T] {
	return &queue[T]{limit: limit, size: size, wake: make(chan struct{}, 1), ended: make(chan struct{})}
}

func (q *queue[T]) push(v T, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.final != nil {
		return
	}
	n := q.size(v)
	if len(q.items) >= q.limit || q.bytes+n > maxQueueBytes && len(q.items) > 0 {
		q.dropped++
		return
	}
	if q.dropped > 0 {
		q.items = append(q.items, item[T]{err: &DroppedError{N: q.dropped}})
		q.dropped = 0
	}
	q.items = append(q.items, item[T]{v, err})
	q.bytes += n
	q.signal()
}

// end makes err the queue's last word, after what it holds.
func (q *queue[T]) end(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.final == nil {
		q.final = err
		close(q.ended)
	}
}

func (q *queue[T]) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop waits for the next item. done reports the end: then err is the
// queue's final error, or ctx's.
func (q *queue[T]) pop(ctx context.Context) (it item[T], done bool) {
	for {
		q.mu.Lock()
		switch {
		case len(q.items) > 0:
			it = q.items[0]
			q.bytes -= q.size(it.v)
			q.items[0] = item[T]{}
			q.items = q.items[1:]
			if len(q.items) == 0 {
				q.items = nil // let the backing array go
			} else {
				q.signal() // another iterator of the queue may be waiting
			}
			q.mu.Unlock()
			return it, false
		case q.dropped > 0:
			it.err = &DroppedError{N: q.dropped}
			q.dropped = 0
			q.mu.Unlock()
			return it, false
		case q.final != nil:
			it.err = q.final
			q.mu.Unlock()
			return it, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.ended:
		case <-ctx.Done():
			it.err = ctx.Err()
			return it, true
		}
	}
}

// seq is the body of every iterator: it yields items until the queue ends
// (its final error is yielded last) or the caller stops. after runs once
// per value the caller accepted.
func (q *queue[T]) seq(ctx context.Context, yield func(T, error) bool, after func(T)) {
	for {
		it, done := q.pop(ctx)
		if done {
			yield(it.v, it.err)
			return
		}
		if !yield(it.v, it.err) {
			return
		}
		if after != nil && it.err == nil {
			after(it.v)
		}
	}
}

func messageSize(m Message) int    { return 64 + len(m.ID) + len(m.Room) + len(m.From) + len(m.Data) }
func inboxSize(m InboxMessage) int { return 64 + len(m.ID) + len(m.Data) }
func presenceSize(e PresenceEvent) int {
	if e.Snapshot != nil {
		return 64 + 48*len(e.Snapshot.Members)
	}
	return 64 + len(e.User)
}
