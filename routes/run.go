package routes

import (
	"context"
	"errors"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

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
	ns, err := netns.Open(t.opts.NetNSPath)
	if err != nil {
		return err
	}
	defer ns.Close()

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
		err := t.watch(ctx, ns)
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

// watch runs one pair of subscriptions until one of them ends.
func (t *Table) watch(ctx context.Context, ns vns.NsHandle) error {
	done := make(chan struct{})
	linkCh := make(chan netlink.LinkUpdate, 256)
	var linksStarted bool
	defer func() {
		close(done)
		// The subscription goroutine closes its channel once its socket
		// is closed; drain so it never stays blocked on a send.
		if linksStarted {
			go drainUntilClosed(linkCh)
		}
	}()
	onErr := func(err error) { t.log.Debug("netlink event socket", "err", err) }

	routeFailed := make(chan error, 1)
	routes, err := t.watchRouteEvents(routeFailed)
	if err != nil {
		return err
	}
	defer routes.stop()
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{
		Namespace:              &ns,
		ErrorCallback:          onErr,
		ReceiveBufferSize:      subscribeBuffer,
		ReceiveBufferForceSize: true,
	}); err != nil {
		return err
	}
	linksStarted = true
	// Whatever happened before the subscriptions started is unknown.
	t.mu.Lock()
	t.watching = true
	t.needResync = true
	t.mu.Unlock()
	t.poke()

	resync := time.NewTicker(t.opts.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-routeFailed:
			return err
		case u, ok := <-linkCh:
			if !ok {
				return errors.New("link subscription closed")
			}
			t.noteLink(u)
			t.poke()
		case <-resync.C:
			t.mu.Lock()
			t.needResync = true
			t.mu.Unlock()
			t.poke()
		}
	}
}

// noteLink queues an interface event for the next apply.
func (t *Table) noteLink(u netlink.LinkUpdate) {
	a := u.Attrs()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.linkEvents[a.Index] = linkEvent{
		name:    a.Name,
		up:      a.RawFlags&unix.IFF_UP != 0,
		deleted: u.Header.Type == unix.RTM_DELLINK,
	}
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

func drainUntilClosed[T any](ch <-chan T) {
	for range ch {
	}
}
