package routes

import (
	"context"
	"time"

	"github.com/calyx-net/calyx/internal/heartbeat"
	"github.com/calyx-net/calyx/routes/netns"
)

// subscribeBuffer is the receive buffer of the event sockets: large enough
// for a burst of 100k route changes made by someone else (the echoes of
// our own writes are filtered out before they are queued). On overflow
// the subscription is renewed and the kernel re-read, so nothing is lost.
const subscribeBuffer = 16 << 20

// Run keeps the kernel in line with the desired set until ctx ends. It
// subscribes to route and link events in the table's namespace: a route of
// ours changed or deleted by hand is repaired within a coalescing delay, an
// interface that appears gets its pending routes; every ResyncInterval it
// re-reads the kernel in full. Run writes nothing until the owner's first
// Apply. It returns nil when ctx ends, or an error if the namespace cannot
// be opened; lost subscriptions are renewed (with a full re-read). Stop Run
// before calling Close.
func (t *Table) Run(ctx context.Context) error {
	if t.opts.NetNSPath != "" {
		ns, err := netns.Open(t.opts.NetNSPath)
		if err != nil {
			return err
		}
		ns.Close()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	applierDone := make(chan struct{})
	go func() {
		defer close(applierDone)
		t.applier(ctx)
	}()
	defer func() { <-applierDone }()

	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		started := time.Now()
		err := t.watch(ctx)
		t.mu.Lock()
		t.watching = false
		t.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		t.log.Warn("route/link watch ended, renewing it", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// watch runs one subscription until it is lost or ctx ends.
func (t *Table) watch(ctx context.Context) error {
	failed := make(chan error, 1)
	stop, err := t.startWatch(failed)
	if err != nil {
		return err
	}
	defer stop()
	resync := time.NewTicker(t.opts.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		case <-resync.C:
			t.mu.Lock()
			t.needResync = true
			t.mu.Unlock()
			t.poke()
		}
	}
}

// startWatch subscribes to the kernel's events and marks the table as
// watching; whatever happened before the subscription started is unknown,
// so the next pass re-reads the kernel.
func (t *Table) startWatch(failed chan<- error) (stop func(), err error) {
	stop, err = t.k.subscribe(eventSelector{protocol: t.opts.Protocol, table: t.table, family: t.opts.Family}, t, failed)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.watching = true
	t.needResync = true
	t.mu.Unlock()
	t.poke()
	return stop, nil
}

// poke asks the applier for a pass without blocking.
func (t *Table) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// applier runs background passes and retries failures with backoff. A
// poke after a quiet spell is applied at once, so that a single change
// (a new block learned from a peer) is not held back; a poke within
// CoalesceDelay of the previous pass waits out the rest of it, so that a
// burst becomes one pass per delay. It never writes before the owner's
// first Apply.
func (t *Table) applier(ctx context.Context) {
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	backoff := 100 * time.Millisecond
	var lastPass time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-retry.C:
		}
		// The watch's resync pokes at least once per ResyncInterval: an
		// applier that stops beating is stuck (its owner's /livez).
		heartbeat.Beat(ctx)
		if wait := t.opts.CoalesceDelay - time.Since(lastPass); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if !t.InSync() || !t.hasWork() {
			continue
		}
		_, err := t.apply(ctx, nil)
		lastPass = time.Now()
		if err != nil && ctx.Err() == nil {
			retry.Reset(backoff)
			backoff = min(backoff*2, t.opts.ResyncInterval)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// hasWork reports whether a background pass would have anything to look at.
func (t *Table) hasWork() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.needResync || len(t.dirty) > 0 || len(t.kernelEvents) > 0 || len(t.linkEvents) > 0
}
