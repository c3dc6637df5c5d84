package routes

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
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
	// CoalesceDelay is how long Run waits after the first of a burst of
	// events before it applies, so a burst becomes one Apply. Default 20ms.
	CoalesceDelay time.Duration
	// BeforeWrite, if set, is called before every kernel write; a non-nil
	// error fails that write as if the kernel had refused it. For tests.
	BeforeWrite func(op WriteOp, dst netip.Prefix) error
}

// Table keeps the kernel's routes of one protocol number equal to a desired
// set, in the desired/actual style: setters only change memory, Apply (and
// the Run loop, once the owner has applied the first time) writes the
// differences to the kernel through one reused netlink handle.
//
// A Table owns every route with its protocol number in its table and
// families: routes of that protocol that are not desired are deleted. Use
// one Table per (protocol, table, family).
type Table struct {
	opts      Options
	table     int
	log       *slog.Logger
	h         *netlink.Handle
	ownHandle bool
	counters  counters

	// mu guards the desired state and what the Run loop hands over; it is
	// never held during kernel I/O, so setters do not wait for an Apply.
	mu           sync.Mutex
	desired      map[netip.Prefix]Route
	dirty        map[netip.Prefix]struct{}
	kernelEvents map[netip.Prefix]*kroute // route seen (nil: deleted) since the last apply
	linkEvents   map[int]linkEvent
	needResync   bool
	inSync       bool // the owner has applied once: Run may write
	watching     bool // Run's subscriptions are live: the caches follow the kernel
	kick         chan struct{}

	// applyMu serializes applies and guards the kernel view below.
	applyMu   sync.Mutex
	actual    map[netip.Prefix]kroute
	extras    []dupRoute // our routes shadowed by another of ours at the same prefix
	links     map[string]linkState
	linkNames map[int]string
	pending   map[netip.Prefix]struct{}
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
// handle unless Options.Handle is given; Close releases it.
func New(opts Options) (*Table, error) {
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
		h:            opts.Handle,
		desired:      make(map[netip.Prefix]Route),
		dirty:        make(map[netip.Prefix]struct{}),
		kernelEvents: make(map[netip.Prefix]*kroute),
		linkEvents:   make(map[int]linkEvent),
		needResync:   true,
		kick:         make(chan struct{}, 1),
		actual:       make(map[netip.Prefix]kroute),
		links:        make(map[string]linkState),
		linkNames:    make(map[int]string),
		pending:      make(map[netip.Prefix]struct{}),
	}
	if t.h == nil {
		h, err := netns.NewHandle(opts.NetNSPath)
		if err != nil {
			return nil, err
		}
		t.h, t.ownHandle = h, true
	}
	return t, nil
}

// Close releases the table's own netlink handle. Routes stay in the kernel.
func (t *Table) Close() {
	if t.ownHandle {
		t.h.Close()
	}
}

// SetRoutes replaces the whole desired set. Invalid routes are left out and
// reported in the returned error; the valid ones are set regardless.
func (t *Table) SetRoutes(routes []Route) error {
	var errs []error
	next := make(map[netip.Prefix]Route, len(routes))
	for _, r := range routes {
		if err := r.validate(t.opts.Family); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := next[r.Dst]; dup {
			errs = append(errs, fmt.Errorf("route %s: destination listed twice", r.Dst))
			continue
		}
		next[r.Dst] = r.clone()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, old := range t.desired {
		if nr, ok := next[p]; !ok || !sameRoute(old, nr) {
			t.dirty[p] = struct{}{}
		}
	}
	for p, nr := range next {
		if old, ok := t.desired[p]; !ok || !sameRoute(old, nr) {
			t.dirty[p] = struct{}{}
		}
	}
	t.desired = next
	if len(t.dirty) > 0 {
		t.poke() // Run's applier writes the change (after the first Apply)
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
	if old, ok := t.desired[r.Dst]; !ok || !sameRoute(old, r) {
		t.desired[r.Dst] = r.clone()
		t.dirty[r.Dst] = struct{}{}
		t.poke()
	}
	return nil
}

// DeleteRoute removes the desired route to dst, if any.
func (t *Table) DeleteRoute(dst netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.desired[dst]; ok {
		delete(t.desired, dst)
		t.dirty[dst] = struct{}{}
		t.poke()
	}
}

// Routes returns a copy of the desired set.
func (t *Table) Routes() []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Route, 0, len(t.desired))
	for _, r := range t.desired {
		out = append(out, r.clone())
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

func sameRoute(a, b Route) bool {
	if a.Dst != b.Dst || a.Type != b.Type || a.LinkName != b.LinkName || a.Src != b.Src || len(a.NextHops) != len(b.NextHops) {
		return false
	}
	for i := range a.NextHops {
		if a.NextHops[i] != b.NextHops[i] {
			return false
		}
	}
	return true
}
