package routes

import (
	"context"
	"errors"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
)

// subscribeBuffer is the receive buffer of the event sockets: large enough
// that the echo of a 100k-route apply does not overflow it. On overflow
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
	routeCh := make(chan netlink.RouteUpdate, 4096)
	linkCh := make(chan netlink.LinkUpdate, 256)
	var routesStarted, linksStarted bool
	defer func() {
		close(done)
		// The subscription goroutines close their channels once their
		// sockets are closed; drain so none stays blocked on a send.
		if routesStarted {
			go drainUntilClosed(routeCh)
		}
		if linksStarted {
			go drainUntilClosed(linkCh)
		}
	}()
	onErr := func(err error) { t.log.Debug("netlink event socket", "err", err) }

	if err := netlink.RouteSubscribeWithOptions(routeCh, done, netlink.RouteSubscribeOptions{
		Namespace:              &ns,
		ErrorCallback:          onErr,
		ReceiveBufferSize:      subscribeBuffer,
		ReceiveBufferForceSize: true,
	}); err != nil {
		return err
	}
	routesStarted = true
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
		case u, ok := <-routeCh:
			if !ok {
				return errors.New("route subscription closed")
			}
			if t.noteRoute(u) {
				t.poke()
			}
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

// noteRoute queues a route event of ours for the next apply.
func (t *Table) noteRoute(u netlink.RouteUpdate) bool {
	r := &u.Route
	if r.Table != t.table || int(r.Protocol) != t.opts.Protocol {
		return false
	}
	if (r.Family == unix.AF_INET && !t.opts.Family.has4()) || (r.Family == unix.AF_INET6 && !t.opts.Family.has6()) {
		return false
	}
	p, k, ok := haveKernel(r)
	if !ok {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch u.Type {
	case unix.RTM_NEWROUTE:
		t.kernelEvents[p] = &k
	case unix.RTM_DELROUTE:
		t.kernelEvents[p] = nil
	default:
		return false
	}
	return true
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

// applier runs background passes: after each poke it waits CoalesceDelay
// so a burst of events becomes one pass, and retries failures with
// backoff. It never writes before the owner's first Apply.
func (t *Table) applier(ctx context.Context) {
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-retry.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(t.opts.CoalesceDelay):
		}
		if !t.InSync() || !t.hasWork() {
			continue
		}
		if _, err := t.apply(ctx, nil); err != nil && ctx.Err() == nil {
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
