package agent

import (
	"context"
	"sync"
)

// attachmentLocks serializes the CNI calls on one attachment (by endpoint
// name). A runtime that times out retries ADD while the first is still
// running, and may send DEL meanwhile; interleaved, a losing ADD's undo
// would release the addresses the winner is using. The zero value is ready.
type attachmentLocks struct {
	mu   sync.Mutex
	held map[string]*attachmentLock
}

type attachmentLock struct {
	ch      chan struct{} // holds one token while locked
	waiters int           // holders and waiters; the entry goes at zero
}

// lock waits for the attachment's lock or for ctx to end; the caller calls
// the returned unlock exactly once.
func (l *attachmentLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[string]*attachmentLock{}
	}
	e := l.held[key]
	if e == nil {
		e = &attachmentLock{ch: make(chan struct{}, 1)}
		l.held[key] = e
	}
	e.waiters++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		e.waiters--
		if e.waiters == 0 {
			delete(l.held, key)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() {
			<-e.ch
			release()
		}, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
