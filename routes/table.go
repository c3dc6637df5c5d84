package routes

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/internal/pfxmap"
)

// WriteOp names a kernel write, for the BeforeWrite hook and logs.
type WriteOp string

const (
	OpAdd     WriteOp = "add"
	OpReplace WriteOp = "replace"
	OpDelete  WriteOp = "delete"
)

// Options configures a Table.
type Options struct {
	// Protocol is the rtnetlink protocol number the table owns (ProtoWorkload
	// or ProtoBGP). Routes with any other protocol are never touched.
	// Values up to RTPROT_STATIC (4) are refused.
	Protocol int
	// TableID is the kernel routing table; 0 means main (254).
	TableID int
	// Family selects IPv4, IPv6 or both (the default).
	Family Family
	// NetNSPath is the network namespace to program; empty means the one
	// the agent runs in. Run subscribes to route and link events there.
	NetNSPath string
	// Handle, if set, is used for every request instead of a handle the
	// table opens itself; it must belong to NetNSPath's namespace and is
	// not closed by the table.
	Handle *netlink.Handle
	// Logger receives the table's logs; nil discards them.
	Logger *slog.Logger
	// ResyncInterval is how often Run re-reads the kernel's routes in full
	// to repair drift that no event reported. Default 60s.
	ResyncInterval time.Duration
	// CoalesceDelay is the shortest time between two of Run's passes: a
	// change after a quiet spell is written at once, the changes that
	// follow within the delay are written together when it has passed, so
	// a burst costs one pass per delay. Default 20ms.
	CoalesceDelay time.Duration
	// OnApply, if set, is called after each apply pass that wrote to the
	// kernel or failed, with its duration (the agent's metrics).
	OnApply func(took time.Duration, err error)
	// BeforeWrite, if set, is called before every kernel write; a non-nil
	// error fails that write as if the kernel had refused it. For tests.
	BeforeWrite func(op WriteOp, dst netip.Prefix) error
}

// Table keeps the kernel's routes of one protocol number equal to a desired
// set, in the desired/actual style: setters only change memory, Apply (and
// the Run loop, once the owner has applied the first time) writes the
// differences to the kernel over one socket of its own, many requests per
// system call (routeWriter).
//
// A Table owns every route with its protocol number in its table and
// families: routes of that protocol that are not desired are deleted. Use
// one Table per (protocol, table, family).
type Table struct {
	opts     Options
	table    int
	log      *slog.Logger
	k        kernelShim // reads, batched writes and events; writes under applyMu
	hops     hopCache
	counters counters

	// mu guards the desired state and what the Run loop hands over; it is
	// never held during kernel I/O, so setters do not wait for an Apply.
	mu           sync.Mutex
	desired      *pfxmap.Map[storedRoute]
	dirty        map[netip.Prefix]struct{}
	kernelEvents map[netip.Prefix]kernelEvent // the last event of each route since the last apply
	linkEvents   map[int]linkEvent
	needResync   bool
	inSync       bool // the owner has applied once: Run may write
	watching     bool // Run's subscriptions are live: the caches follow the kernel
	kick         chan struct{}

	// applyMu serializes applies and guards the kernel view below.
	applyMu   sync.Mutex
	actual    *pfxmap.Map[kroute]
	extras    []dupRoute // our routes shadowed by another of ours at the same prefix
	links     map[string]linkState
	linkNames map[int]string
	pending   map[netip.Prefix]struct{}
	reqs      []writeReq // a pass's queued writes, reused from pass to pass
	targets   []target   // a pass's plan, reused likewise
}

// kernelEvent is a route of ours as an event reported it.
type kernelEvent struct {
	k       kroute
	deleted bool
}

type linkState struct {
	index int
	up    bool
}

type linkEvent struct {
	name    string
	up      bool
	deleted bool
}

type dupRoute struct {
	dst netip.Prefix
	k   kroute
}

// New returns a Table with an empty desired set. It opens its netlink
// sockets (and a handle, unless Options.Handle is given); Close releases
// them.
func New(opts Options) (*Table, error) {
	t, err := newTable(opts)
	if err != nil {
		return nil, err
	}
	k, err := newNetlinkKernel(opts.NetNSPath, opts.Handle)
	if err != nil {
		return nil, err
	}
	t.k = k
	return t, nil
}

// newWithKernel is New with the kernel shim injected (tests).
func newWithKernel(opts Options, k kernelShim) (*Table, error) {
	t, err := newTable(opts)
	if err != nil {
		return nil, err
	}
	t.k = k
	return t, nil
}

// newTable checks the options and builds a table without a kernel.
func newTable(opts Options) (*Table, error) {
	if opts.Protocol <= unix.RTPROT_STATIC || opts.Protocol > 255 {
		return nil, fmt.Errorf("route protocol %d: must be between %d and 255 (lower numbers belong to the kernel and to static routes)", opts.Protocol, unix.RTPROT_STATIC+1)
	}
	table := opts.TableID
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	if table < 0 || table == unix.RT_TABLE_LOCAL {
		return nil, fmt.Errorf("route table %d: not allowed", opts.TableID)
	}
	if opts.Family < FamilyBoth || opts.Family > FamilyV6 {
		return nil, fmt.Errorf("unknown address family selector %d", opts.Family)
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = 60 * time.Second
	}
	if opts.CoalesceDelay <= 0 {
		opts.CoalesceDelay = 20 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Table{
		opts:         opts,
		table:        table,
		log:          log.With("component", "routes", "protocol", opts.Protocol, "table", table),
		desired:      newDesired(),
		dirty:        make(map[netip.Prefix]struct{}),
		kernelEvents: make(map[netip.Prefix]kernelEvent),
		linkEvents:   make(map[int]linkEvent),
		needResync:   true,
		kick:         make(chan struct{}, 1),
		actual:       newKernelView(),
		links:        make(map[string]linkState),
		linkNames:    make(map[int]string),
		pending:      make(map[netip.Prefix]struct{}),
	}
	return t, nil
}

// Close releases the table's netlink sockets (and its own handle). Routes
// stay in the kernel.
func (t *Table) Close() {
	t.applyMu.Lock()
	defer t.applyMu.Unlock()
	t.k.close()
}

// SetRoutes replaces the whole desired set. Invalid routes are left out and
// reported in the returned error; the valid ones are set regardless.
func (t *Table) SetRoutes(routes []Route) error {
	var errs []error
	next := newDesired()
	for _, r := range routes {
		if err := r.validate(t.opts.Family); err != nil {
			errs = append(errs, err)
			continue
		}
		if next.Has(r.Dst) {
			errs = append(errs, fmt.Errorf("route %s: destination listed twice", r.Dst))
			continue
		}
		next.Set(r.Dst, t.store(r))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, old := range t.desired.All() {
		if nr, ok := next.Get(p); !ok || !old.same(nr) {
			t.dirty[p] = struct{}{}
		}
	}
	for p, nr := range next.All() {
		if old, ok := t.desired.Get(p); !ok || !old.same(nr) {
			t.dirty[p] = struct{}{}
		}
	}
	t.desired = next
	if len(t.dirty) > 0 {
		t.poke() // Run's applier writes the change (after the first Apply)
	}
	return errors.Join(errs...)
}

// UpdateRoutes changes part of the desired set in one step: each route of
// set is added or replaces the one at its destination, each destination of
// del is removed (one that is not desired is ignored). It costs what it
// changes, not the size of the set: the way to feed a stream of small
// changes to a large table. Invalid routes are left out and reported in
// the returned error; the rest is applied regardless.
func (t *Table) UpdateRoutes(set []Route, del []netip.Prefix) error {
	var errs []error
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := false
	for _, p := range del {
		if t.desired.Delete(p) {
			t.dirty[p] = struct{}{}
			changed = true
		}
	}
	for _, r := range set {
		if err := r.validate(t.opts.Family); err != nil {
			errs = append(errs, err)
			continue
		}
		if old, ok := t.desired.Get(r.Dst); !ok || !old.is(r) {
			t.desired.Set(r.Dst, t.store(r))
			t.dirty[r.Dst] = struct{}{}
			changed = true
		}
	}
	if changed {
		t.poke()
	}
	return errors.Join(errs...)
}

// SetRoute adds or changes one desired route.
func (t *Table) SetRoute(r Route) error {
	if err := r.validate(t.opts.Family); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.desired.Get(r.Dst); !ok || !old.is(r) {
		t.desired.Set(r.Dst, t.store(r))
		t.dirty[r.Dst] = struct{}{}
		t.poke()
	}
	return nil
}

// DeleteRoute removes the desired route to dst, if any.
func (t *Table) DeleteRoute(dst netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.desired.Delete(dst) {
		t.dirty[dst] = struct{}{}
		t.poke()
	}
}

// Routes returns a copy of the desired set.
func (t *Table) Routes() []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Route, 0, t.desired.Len())
	for p, r := range t.desired.All() {
		out = append(out, r.route(p).clone())
	}
	return out
}

// InSync reports whether the owner has applied at least once, which is
// when the Run loop starts writing on its own.
func (t *Table) InSync() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inSync
}

// storedRoute is a desired route as the table keeps it: the destination
// is the map's key and the type one byte. The desired set is packed
// (pfxmap): 100k routes learned through one gateway share one storedRoute,
// each holding 12 bytes or so instead of a 32-byte key and the value.
type storedRoute struct {
	link string
	hops []netip.Addr
	src  netip.Addr
	typ  uint8
}

func newDesired() *pfxmap.Map[storedRoute] { return pfxmap.New(storedKey, nil) }

// storedKey encodes a stored route for sharing: its slices are never
// modified once stored (store copies them), so none is copied again.
func storedKey(dst []byte, s storedRoute) []byte {
	dst = append(dst, s.typ, byte(len(s.link)))
	dst = append(dst, s.link...)
	dst = pfxmap.AppendAddr(dst, s.src)
	for _, h := range s.hops {
		dst = pfxmap.AppendAddr(dst, h)
	}
	return dst
}

// store converts a valid route for keeping.
func (t *Table) store(r Route) storedRoute {
	r = t.hops.route(r)
	return storedRoute{link: r.LinkName, hops: r.NextHops, src: r.Src, typ: uint8(r.Type)}
}

// route is the stored route at dst; its NextHops may be shared: callers
// that hand it out clone it.
func (s storedRoute) route(dst netip.Prefix) Route {
	return Route{Dst: dst, Type: RouteType(s.typ), LinkName: s.link, NextHops: s.hops, Src: s.src}
}

func (s storedRoute) same(o storedRoute) bool {
	return s.typ == o.typ && s.link == o.link && s.src == o.src && slices.Equal(s.hops, o.hops)
}

// is reports whether s is r (at the same destination).
func (s storedRoute) is(r Route) bool {
	return RouteType(s.typ) == r.Type && s.link == r.LinkName && s.src == r.Src && slices.Equal(s.hops, r.NextHops)
}
