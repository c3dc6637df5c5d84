package bgpbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// eventBuffer is the receive buffer of the watch socket. 100k route events
// arrive within a second; the reader does little per event, but the
// machine has two cores shared with what is being measured. On overflow the
// watch is renewed with a dump (see resubscribe), so nothing is lost, only
// first-seen times get later.
const eventBuffer = 64 << 20

// routeWatcher follows the main-table IPv4 routes of one protocol inside
// one prefix, in one namespace, through an rtnetlink subscription: it
// knows which are present, when each was first seen and when the count
// last changed. Reading events is what the kernel tells every listener at
// the moment it has installed a route, so a timestamp here is "the kernel
// holds the route", give or take the scheduling of this goroutine.
type routeWatcher struct {
	proto  netlink.RouteProtocol
	within netip.Prefix
	log    *slog.Logger
	ns     vns.NsHandle

	mu        sync.Mutex
	present   map[netip.Prefix]time.Time
	changedAt time.Time     // when len(present) last changed
	notify    chan struct{} // closed at the next change, when someone waits
	renewals  int

	stop    chan struct{}
	stopped chan struct{}
}

// watchRoutes starts watching; the existing routes are read first (a dump
// on the same socket), so the watcher is complete from the start.
func watchRoutes(nsPath string, proto int, within netip.Prefix, log *slog.Logger) (*routeWatcher, error) {
	ns, err := vns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	w := &routeWatcher{
		proto: netlink.RouteProtocol(proto), within: within, log: log, ns: ns,
		present: map[netip.Prefix]time.Time{}, changedAt: time.Now(),
		stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	ch, done, err := w.subscribe()
	if err != nil {
		ns.Close()
		return nil, err
	}
	go w.loop(ch, done)
	return w, nil
}

func (w *routeWatcher) subscribe() (chan netlink.RouteUpdate, chan struct{}, error) {
	ch := make(chan netlink.RouteUpdate, 1<<16)
	done := make(chan struct{})
	err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:              &w.ns,
		ListExisting:           true,
		ReceiveBufferSize:      eventBuffer,
		ReceiveBufferForceSize: true,
		ErrorCallback:          func(err error) { w.log.Debug("route watch", "err", err) },
	})
	if err != nil {
		close(done)
		return nil, nil, fmt.Errorf("subscribing to route events: %w", err)
	}
	return ch, done, nil
}

func (w *routeWatcher) loop(ch chan netlink.RouteUpdate, done chan struct{}) {
	defer close(w.stopped)
	for {
		select {
		case <-w.stop:
			close(done)
			go drain(ch)
			return
		case u, ok := <-ch:
			if ok {
				w.note(u, time.Now())
				continue
			}
			// The socket failed, most likely ENOBUFS: events were lost.
			// Start again from a dump.
			close(done)
			var err error
			for {
				if ch, done, err = w.resubscribe(); err == nil {
					break
				}
				w.log.Warn("renewing the route watch", "err", err)
				select {
				case <-w.stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
}

func (w *routeWatcher) resubscribe() (chan netlink.RouteUpdate, chan struct{}, error) {
	w.mu.Lock()
	w.renewals++
	old := w.present
	w.present = make(map[netip.Prefix]time.Time, len(old))
	w.mu.Unlock()
	ch, done, err := w.subscribe()
	if err != nil {
		w.mu.Lock()
		w.present = old
		w.mu.Unlock()
		return nil, nil, err
	}
	w.log.Warn("route events were lost (socket overflow); watching again from a dump")
	return ch, done, nil
}

func drain(ch chan netlink.RouteUpdate) {
	for range ch {
	}
}

func (w *routeWatcher) note(u netlink.RouteUpdate, at time.Time) {
	r := &u.Route
	if r.Protocol != w.proto || r.Dst == nil || (r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
		return
	}
	a, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return
	}
	bits, _ := r.Dst.Mask.Size()
	p := netip.PrefixFrom(a.Unmap(), bits)
	if !w.within.Contains(p.Addr()) {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	before := len(w.present)
	switch u.Type {
	case unix.RTM_NEWROUTE:
		if _, had := w.present[p]; !had {
			w.present[p] = at
		}
	case unix.RTM_DELROUTE:
		delete(w.present, p)
	}
	if len(w.present) != before {
		w.changedAt = at
		if w.notify != nil {
			close(w.notify)
			w.notify = nil
		}
	}
}

// wait blocks until cond (called under the lock) holds, and returns
// what it returns.
func (w *routeWatcher) wait(ctx context.Context, cond func() (time.Time, bool)) (time.Time, error) {
	for {
		w.mu.Lock()
		if at, ok := cond(); ok {
			w.mu.Unlock()
			return at, nil
		}
		if w.notify == nil {
			w.notify = make(chan struct{})
		}
		ch := w.notify
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-ch:
		case <-w.stopped:
			return time.Time{}, errors.New("route watch stopped")
		}
	}
}

// waitCount waits until exactly n routes are present and returns when the
// count became n.
func (w *routeWatcher) waitCount(ctx context.Context, n int) (time.Time, error) {
	return w.wait(ctx, func() (time.Time, bool) { return w.changedAt, len(w.present) == n })
}

// waitPrefix waits until p is present and returns when it was first seen.
func (w *routeWatcher) waitPrefix(ctx context.Context, p netip.Prefix) (time.Time, error) {
	return w.wait(ctx, func() (time.Time, bool) {
		at, ok := w.present[p]
		return at, ok
	})
}

func (w *routeWatcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.present)
}

// lostEvents reports how often the watch had to be renewed.
func (w *routeWatcher) lostEvents() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.renewals
}

func (w *routeWatcher) close() {
	close(w.stop)
	<-w.stopped
	w.ns.Close()
}
