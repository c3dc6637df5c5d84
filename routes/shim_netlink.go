package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
)

// netlinkKernel is the real kernelShim: dumps and lookups through a
// netlink handle, writes batched over a socket of its own (routeWriter),
// route events read from a filtered socket (routeEvents) and link events
// from the netlink library's subscription, all in one namespace.
type netlinkKernel struct {
	nsPath    string
	h         *netlink.Handle
	ownHandle bool
	w         *routeWriter
}

// newNetlinkKernel opens the sockets in the namespace at nsPath (the
// current one when empty); h, when given, is used instead of a handle of
// its own and is not closed.
func newNetlinkKernel(nsPath string, h *netlink.Handle) (*netlinkKernel, error) {
	w, err := newRouteWriter(nsPath)
	if err != nil {
		return nil, err
	}
	k := &netlinkKernel{nsPath: nsPath, h: h, w: w}
	if k.h == nil {
		h, err := netns.NewHandle(nsPath)
		if err != nil {
			w.close()
			return nil, err
		}
		k.h, k.ownHandle = h, true
	}
	return k, nil
}

func (k *netlinkKernel) close() {
	k.w.close()
	if k.ownHandle {
		k.h.Close()
	}
}

func (k *netlinkKernel) listRoutes(family, table, protocol int, fn func(netip.Prefix, kroute)) error {
	filter := &netlink.Route{Table: table, Protocol: netlink.RouteProtocol(protocol)}
	mask := uint64(netlink.RT_FILTER_TABLE | netlink.RT_FILTER_PROTOCOL)
	return k.h.RouteListFilteredIter(family, filter, mask, func(nr netlink.Route) bool {
		if p, kr, ok := haveKernel(&nr); ok {
			fn(p, kr)
		}
		return true
	})
}

func (k *netlinkKernel) listLinks() (map[string]linkState, error) {
	list, err := k.h.LinkList()
	if err != nil {
		return nil, err
	}
	links := make(map[string]linkState, len(list))
	for _, l := range list {
		a := l.Attrs()
		links[a.Name] = linkState{index: a.Index, up: a.RawFlags&unix.IFF_UP != 0}
	}
	return links, nil
}

func (k *netlinkKernel) linkByName(name string) (linkState, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		return linkState{}, err
	}
	return linkState{index: l.Attrs().Index, up: l.Attrs().RawFlags&unix.IFF_UP != 0}, nil
}

func (k *netlinkKernel) queueWrite(op WriteOp, dst netip.Prefix, kr kroute, table, protocol int) bool {
	return k.w.queue(op, dst, kr, table, protocol)
}

func (k *netlinkKernel) flushWrites() []error { return k.w.flush() }

// subscribe opens the route event socket and the link subscription. Link
// updates are handed on by a goroutine of their own; a closed link
// subscription counts as lost.
func (k *netlinkKernel) subscribe(sel eventSelector, sink eventSink, failed chan<- error) (func(), error) {
	ns, err := netns.Open(k.nsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	routes, err := k.watchRouteEvents(sel, sink, failed)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	linkCh := make(chan netlink.LinkUpdate, 256)
	if err := netlink.LinkSubscribeWithOptions(linkCh, done, netlink.LinkSubscribeOptions{
		Namespace:              &ns,
		ReceiveBufferSize:      subscribeBuffer,
		ReceiveBufferForceSize: true,
	}); err != nil {
		routes.stop()
		return nil, fmt.Errorf("link subscription: %w", err)
	}
	var stopped atomic.Bool
	go func() {
		for u := range linkCh {
			if stopped.Load() {
				continue // drain until the library closes it
			}
			a := u.Attrs()
			sink.linkEvent(a.Index, a.Name, a.RawFlags&unix.IFF_UP != 0, u.Header.Type == unix.RTM_DELLINK)
			sink.eventsQueued()
		}
		if !stopped.Load() {
			select {
			case failed <- errors.New("link subscription closed"):
			default: // a route event failure came first
			}
		}
	}()
	stop := func() {
		stopped.Store(true)
		close(done) // the library closes linkCh once its socket is closed
		routes.stop()
	}
	return stop, nil
}
