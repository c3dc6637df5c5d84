package routes

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeKernel is an in-memory kernelShim that behaves as rtnetlink does
// where the table depends on it: exclusive adds refuse a taken slot
// (table, destination, metric) whatever its protocol, replace takes the
// slot, delete matches protocol, type and metric and answers ESRCH when
// nothing matches, writes through a missing or down interface fail, a
// gateway must be reachable through a connected prefix (and the kernel
// fills in its interface), IPv6 routes get metric 1024 and no scope, IPv6
// blackholes sit on lo, and an interface that goes down or away takes its
// routes with it without route events. Changes made "by hand" (the hand*
// methods) are reported to the subscriber; the table's own writes are not
// (the real socket filters their echoes).
type fakeKernel struct {
	mu        sync.Mutex
	routes    []fakeRoute
	links     map[string]*linkState
	nextIndex int
	connected map[netip.Prefix]string // gateway reachability: prefix -> link
	batch     []fakeWrite

	// failures to inject
	failures     []fakeFailure                     // one-shot, first match wins
	failWrite    func(fakeWrite) error             // called for every write when set
	failFlush    error                             // the whole batch fails (socket error)
	dumpFailures int                               // next dumps interrupted
	onWrite      func(fk *fakeKernel, w fakeWrite) // runs before a write is applied, lock not held

	sub     *fakeSub
	written int // writes the kernel applied
}

type fakeRoute struct {
	table, protocol int
	dst             netip.Prefix
	k               kroute
}

type fakeWrite struct {
	op              WriteOp
	dst             netip.Prefix
	k               kroute
	table, protocol int
}

// fakeFailure fails the next write of op to dst (any op when empty, any
// destination when invalid) with err.
type fakeFailure struct {
	op  WriteOp
	dst netip.Prefix
	err error
}

type fakeSub struct {
	sel    eventSelector
	sink   eventSink
	failed chan<- error
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{
		links:     map[string]*linkState{"lo": {index: 1, up: true}},
		nextIndex: 2,
		connected: map[netip.Prefix]string{},
	}
}

// ---- kernelShim ----

func (fk *fakeKernel) listRoutes(family, table, protocol int, fn func(netip.Prefix, kroute)) error {
	fk.mu.Lock()
	if fk.dumpFailures > 0 {
		fk.dumpFailures--
		fk.mu.Unlock()
		return fmt.Errorf("route dump: %w", netlink.ErrDumpInterrupted)
	}
	var out []fakeRoute
	for _, r := range fk.routes {
		if r.table == table && r.protocol == protocol && familyOf(r.dst) == family {
			out = append(out, r)
		}
	}
	fk.mu.Unlock()
	for _, r := range out {
		fn(r.dst, cloneK(r.k))
	}
	return nil
}

func (fk *fakeKernel) listLinks() (map[string]linkState, error) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	out := make(map[string]linkState, len(fk.links))
	for n, l := range fk.links {
		out[n] = *l
	}
	return out, nil
}

func (fk *fakeKernel) linkByName(name string) (linkState, error) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	l, ok := fk.links[name]
	if !ok {
		return linkState{}, fmt.Errorf("link %s: %w", name, unix.ENODEV)
	}
	return *l, nil
}

func (fk *fakeKernel) queueWrite(op WriteOp, dst netip.Prefix, k kroute, table, protocol int) bool {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.batch = append(fk.batch, fakeWrite{op: op, dst: dst, k: cloneK(k), table: table, protocol: protocol})
	return len(fk.batch) >= writeBatchMax
}

func (fk *fakeKernel) flushWrites() []error {
	fk.mu.Lock()
	batch := fk.batch
	fk.batch = nil
	flushErr := fk.failFlush
	fk.mu.Unlock()
	results := make([]error, len(batch))
	for i, w := range batch {
		if flushErr != nil {
			results[i] = flushErr
			continue
		}
		if fk.onWrite != nil {
			fk.onWrite(fk, w)
		}
		results[i] = fk.write(w)
	}
	return results
}

func (fk *fakeKernel) subscribe(sel eventSelector, sink eventSink, failed chan<- error) (func(), error) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	s := &fakeSub{sel: sel, sink: sink, failed: failed}
	fk.sub = s
	return func() {
		fk.mu.Lock()
		defer fk.mu.Unlock()
		if fk.sub == s {
			fk.sub = nil
		}
	}, nil
}

func (fk *fakeKernel) close() {}

// ---- the kernel's rules ----

// write applies one request as rtnetlink would.
func (fk *fakeKernel) write(w fakeWrite) error {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	for i, f := range fk.failures {
		if (f.op == "" || f.op == w.op) && (!f.dst.IsValid() || f.dst == w.dst) {
			fk.failures = slices.Delete(fk.failures, i, i+1)
			return f.err
		}
	}
	if fk.failWrite != nil {
		if err := fk.failWrite(w); err != nil {
			return err
		}
	}
	is6 := w.dst.Addr().Is6()
	metric := w.k.priority
	if is6 && metric == 0 {
		metric = 1024
	}
	slot := func(r fakeRoute) bool {
		return r.table == w.table && r.dst == w.dst && r.k.priority == metric
	}
	if w.op == OpDelete {
		for i, r := range fk.routes {
			if r.table == w.table && r.dst == w.dst && r.protocol == w.protocol && r.k.typ == w.k.typ &&
				(w.k.priority == 0 || r.k.priority == w.k.priority) {
				fk.routes = slices.Delete(fk.routes, i, i+1)
				fk.written++
				return nil
			}
		}
		return unix.ESRCH
	}
	k, err := fk.resolveLocked(w.dst, w.k)
	if err != nil {
		return err
	}
	k.priority = metric
	nr := fakeRoute{table: w.table, protocol: w.protocol, dst: w.dst, k: k}
	for i, r := range fk.routes {
		if slot(r) {
			if w.op == OpAdd {
				return unix.EEXIST
			}
			fk.routes[i] = nr
			fk.written++
			return nil
		}
	}
	fk.routes = append(fk.routes, nr)
	fk.written++
	return nil
}

// resolveLocked checks a route's interfaces and gateways and returns it as
// the kernel would store it.
func (fk *fakeKernel) resolveLocked(dst netip.Prefix, k kroute) (kroute, error) {
	k = cloneK(k)
	is6 := dst.Addr().Is6()
	if is6 {
		k.scope = netlink.SCOPE_UNIVERSE
	}
	if k.typ == unix.RTN_BLACKHOLE {
		k.linkIndex, k.hops = 0, nil
		if is6 {
			k.linkIndex = 1 // lo
		}
		return k, nil
	}
	up := func(idx int) error {
		for _, l := range fk.links {
			if l.index == idx {
				if !l.up {
					return unix.ENETDOWN
				}
				return nil
			}
		}
		return unix.ENODEV
	}
	if len(k.hops) == 0 {
		return k, up(k.linkIndex)
	}
	for i, h := range k.hops {
		if h.linkIndex != 0 {
			if err := up(h.linkIndex); err != nil {
				return k, err
			}
			if k.onlink {
				continue
			}
		}
		idx := fk.reachLocked(h.gw)
		if idx == 0 || (h.linkIndex != 0 && h.linkIndex != idx) {
			return k, unix.ENETUNREACH
		}
		k.hops[i].linkIndex = idx
	}
	sortHops(k.hops)
	return k, nil
}

// reachLocked is the up interface through which gw is connected, or 0.
func (fk *fakeKernel) reachLocked(gw netip.Addr) int {
	for p, name := range fk.connected {
		if l, ok := fk.links[name]; ok && l.up && p.Contains(gw) {
			return l.index
		}
	}
	return 0
}

// ---- changes made by hand ----

// handLink creates, changes (up) or deletes (absent) an interface. A new
// interface gets a new index, as in the kernel. Routes through an
// interface that goes down or away are flushed without route events.
func (fk *fakeKernel) handLink(name string, present, up bool) {
	fk.mu.Lock()
	l, had := fk.links[name]
	var ev *[4]any
	switch {
	case !present && had:
		delete(fk.links, name)
		fk.flushLinkLocked(l.index)
		ev = &[4]any{l.index, name, false, true}
	case present && !had:
		l = &linkState{index: fk.nextIndex, up: up}
		fk.nextIndex++
		fk.links[name] = l
		ev = &[4]any{l.index, name, up, false}
	case present && l.up != up:
		l.up = up
		if !up {
			fk.flushLinkLocked(l.index)
		}
		ev = &[4]any{l.index, name, up, false}
	}
	sub := fk.sub
	fk.mu.Unlock()
	if sub != nil && ev != nil {
		sub.sink.linkEvent(ev[0].(int), ev[1].(string), ev[2].(bool), ev[3].(bool))
		sub.sink.eventsQueued()
	}
}

func (fk *fakeKernel) flushLinkLocked(idx int) {
	fk.routes = slices.DeleteFunc(fk.routes, func(r fakeRoute) bool { return r.k.usesLink(idx) })
}

// connect makes gateways in p reachable through the interface.
func (fk *fakeKernel) connect(p string, link string) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.connected[netip.MustParsePrefix(p)] = link
}

// handRoute writes a route as someone else would (ip route replace, or
// add when exclusive), and reports it to a subscriber that wants it.
func (fk *fakeKernel) handRoute(table, protocol int, r Route, metric int, exclusive bool) error {
	fk.mu.Lock()
	idx := 0
	if r.LinkName != "" {
		if l, ok := fk.links[r.LinkName]; ok {
			idx = l.index
		}
	}
	fk.mu.Unlock()
	k := wantKernel(r, idx)
	k.priority = metric
	op := OpReplace
	if exclusive {
		op = OpAdd
	}
	if err := fk.write(fakeWrite{op: op, dst: r.Dst, k: k, table: table, protocol: protocol}); err != nil {
		return err
	}
	fk.mu.Lock()
	var stored kroute
	for _, x := range fk.routes {
		if x.table == table && x.dst == r.Dst && x.protocol == protocol {
			stored = cloneK(x.k)
		}
	}
	fk.mu.Unlock()
	fk.notify(table, protocol, r.Dst, stored, false)
	return nil
}

// handDelete deletes the first route at dst of protocol, as `ip route del`.
func (fk *fakeKernel) handDelete(table, protocol int, dst netip.Prefix) bool {
	fk.mu.Lock()
	var gone *fakeRoute
	for i, r := range fk.routes {
		if r.table == table && r.protocol == protocol && r.dst == dst {
			gone = &r
			fk.routes = slices.Delete(fk.routes, i, i+1)
			break
		}
	}
	fk.mu.Unlock()
	if gone != nil {
		fk.notify(table, protocol, dst, gone.k, true)
	}
	return gone != nil
}

func (fk *fakeKernel) notify(table, protocol int, dst netip.Prefix, k kroute, deleted bool) {
	fk.mu.Lock()
	sub := fk.sub
	fk.mu.Unlock()
	if sub != nil && sub.sel.wants(familyOf(dst), table, protocol) {
		sub.sink.routeEvent(dst, k, deleted)
		sub.sink.eventsQueued()
	}
}

// loseSubscription reports the subscription lost (events dropped).
func (fk *fakeKernel) loseSubscription(err error) {
	fk.mu.Lock()
	sub := fk.sub
	fk.sub = nil
	fk.mu.Unlock()
	if sub != nil {
		sub.failed <- err
	}
}

// failNext fails the next write of op to dst (see fakeFailure).
func (fk *fakeKernel) failNext(op WriteOp, dst string, err error) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	f := fakeFailure{op: op, err: err}
	if dst != "" {
		f.dst = netip.MustParsePrefix(dst)
	}
	fk.failures = append(fk.failures, f)
}

// ---- the dump ----

// dump is the kernel's routes, one per line, sorted, in iproute2's words:
// "<table> <protocol> <route>".
func (fk *fakeKernel) dump() string {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	names := map[int]string{}
	for n, l := range fk.links {
		names[l.index] = n
	}
	dev := func(idx int) string {
		if n, ok := names[idx]; ok {
			return n
		}
		return fmt.Sprintf("if%d", idx)
	}
	var lines []string
	for _, r := range fk.routes {
		var b strings.Builder
		table := fmt.Sprint(r.table)
		if r.table == unix.RT_TABLE_MAIN {
			table = "main"
		}
		proto := fmt.Sprint(r.protocol)
		if r.protocol == unix.RTPROT_STATIC {
			proto = "static"
		}
		fmt.Fprintf(&b, "%s %s ", table, proto)
		k := r.k
		switch {
		case k.typ == unix.RTN_BLACKHOLE:
			fmt.Fprintf(&b, "blackhole %s", r.dst)
		case len(k.hops) == 1:
			fmt.Fprintf(&b, "%s via %s dev %s", r.dst, k.hops[0].gw, dev(k.hops[0].linkIndex))
		case len(k.hops) > 1:
			fmt.Fprint(&b, r.dst)
			for _, h := range k.hops {
				fmt.Fprintf(&b, " nexthop via %s dev %s", h.gw, dev(h.linkIndex))
			}
		default:
			fmt.Fprintf(&b, "%s dev %s", r.dst, dev(k.linkIndex))
		}
		if k.scope == netlink.SCOPE_LINK {
			b.WriteString(" scope link")
		}
		if k.onlink {
			b.WriteString(" onlink")
		}
		if k.src.IsValid() {
			fmt.Fprintf(&b, " src %s", k.src)
		}
		if k.priority != 0 && !(r.dst.Addr().Is6() && k.priority == 1024) {
			fmt.Fprintf(&b, " metric %d", k.priority)
		}
		lines = append(lines, b.String())
	}
	slices.SortFunc(lines, cmp.Compare)
	return strings.Join(lines, "\n")
}

func familyOf(p netip.Prefix) int {
	if p.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func cloneK(k kroute) kroute {
	k.hops = slices.Clone(k.hops)
	return k
}
