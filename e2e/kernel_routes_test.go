package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/e2e/lab"
)

// nsRoutes reads the IPv4 routes of one lab namespace over netlink: cheap
// enough to poll every 20 ms, unlike an `ip route` exec.
type nsRoutes struct {
	target string
	h      *netlink.Handle
}

func openRoutes(t *testing.T, l *lab.Lab, target string) *nsRoutes {
	t.Helper()
	name, err := l.Namespace(target)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("namespace of %s: %v", target, err)
	}
	defer ns.Close() // the handle keeps its own reference
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink in %s: %v", target, err)
	}
	t.Cleanup(h.Close)
	return &nsRoutes{target: target, h: h}
}

// get returns the main-table route to exactly dst, or nil.
func (r *nsRoutes) get(dst netip.Prefix) (*netlink.Route, error) {
	filter := &netlink.Route{Dst: ipNet(dst), Table: unix.RT_TABLE_MAIN}
	for try := 0; ; try++ {
		rs, err := r.h.RouteListFiltered(unix.AF_INET, filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < 3 {
			continue // the table changed during the dump: read again
		}
		if err != nil {
			return nil, fmt.Errorf("routes of %s: %w", r.target, err)
		}
		for i := range rs {
			if rs[i].Dst != nil && prefixOf(rs[i].Dst) == dst {
				return &rs[i], nil
			}
		}
		return nil, nil
	}
}

// expectVia fails unless the namespace has a route to dst learned over BGP
// (protocol 202) with gw among its next hops.
func (r *nsRoutes) expectVia(dst netip.Prefix, gw string) error {
	rt, err := r.get(dst)
	if err != nil {
		return err
	}
	if rt == nil {
		return fmt.Errorf("%s: no route to %s", r.target, dst)
	}
	if int(rt.Protocol) != protoBGP || !slices.Contains(gateways(rt), gw) {
		return fmt.Errorf("%s: route to %s is %s, want via %s proto %d", r.target, dst, describeRoute(rt), gw, protoBGP)
	}
	return nil
}

// expectNone fails if the namespace has any route to exactly dst.
func (r *nsRoutes) expectNone(dst netip.Prefix) error {
	rt, err := r.get(dst)
	if err != nil {
		return err
	}
	if rt != nil {
		return fmt.Errorf("%s still has %s", r.target, describeRoute(rt))
	}
	return nil
}

// Route protocols of the agent (routes.ProtoWorkload, routes.ProtoBGP;
// written out so that a renumbering there shows up here as a failure).
const (
	protoWorkload = 201
	protoBGP      = 202
)

func gateways(rt *netlink.Route) []string {
	var out []string
	if rt.Gw != nil {
		out = append(out, rt.Gw.String())
	}
	for _, nh := range rt.MultiPath {
		if nh.Gw != nil {
			out = append(out, nh.Gw.String())
		}
	}
	return out
}

func describeRoute(rt *netlink.Route) string {
	var b strings.Builder
	if rt.Type == unix.RTN_BLACKHOLE {
		b.WriteString("blackhole ")
	}
	if rt.Dst != nil {
		b.WriteString(rt.Dst.String())
	}
	if gws := gateways(rt); len(gws) > 0 {
		b.WriteString(" via " + strings.Join(gws, ","))
	} else if rt.LinkIndex > 0 {
		fmt.Fprintf(&b, " dev #%d", rt.LinkIndex)
	}
	fmt.Fprintf(&b, " proto %d", int(rt.Protocol))
	return b.String()
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// routeEvent is one route change the kernel reported.
type routeEvent struct {
	At      time.Time
	Deleted bool
	Route   netlink.Route
}

func (e routeEvent) String() string {
	verb := "new"
	if e.Deleted {
		verb = "deleted"
	}
	return fmt.Sprintf("%s %s %s", e.At.Format("15:04:05.000"), verb, describeRoute(&e.Route))
}

// routeWatch records every IPv4 route change of a namespace, from a netlink
// subscription: a route deleted and re-added between two polls would slip
// past polling, never past this.
type routeWatch struct {
	target string
	mu     sync.Mutex
	events []routeEvent
	errs   []error
}

// watchRoutes subscribes to the route changes of target until the test ends.
func watchRoutes(t *testing.T, l *lab.Lab, target string) *routeWatch {
	t.Helper()
	name, err := l.Namespace(target)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("namespace of %s: %v", target, err)
	}
	defer ns.Close()
	w := &routeWatch{target: target}
	ch := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	err = netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:         &ns,
		ReceiveBufferSize: 1 << 20,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			w.errs = append(w.errs, err)
			w.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("route subscription in %s: %v", target, err)
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for u := range ch {
			if u.Family != 0 && u.Family != unix.AF_INET {
				continue
			}
			ev := routeEvent{At: time.Now(), Deleted: u.Type == unix.RTM_DELROUTE, Route: u.Route}
			w.mu.Lock()
			w.events = append(w.events, ev)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-finished
	})
	return w
}

// matching lists the events for exactly dst.
func (w *routeWatch) matching(dst netip.Prefix) []routeEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []routeEvent
	for _, e := range w.events {
		if e.Route.Dst != nil && prefixOf(e.Route.Dst) == dst {
			out = append(out, e)
		}
	}
	return out
}

// deletions lists the deletions of dst seen so far.
func (w *routeWatch) deletions(dst netip.Prefix) []routeEvent {
	var out []routeEvent
	for _, e := range w.matching(dst) {
		if e.Deleted {
			out = append(out, e)
		}
	}
	return out
}

// err reports a subscription failure (an overrun would hide events).
func (w *routeWatch) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		return fmt.Errorf("route subscription in %s: %w", w.target, errors.Join(w.errs...))
	}
	return nil
}
