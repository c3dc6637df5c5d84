package routes

// The route table's merge, conflict and pending logic against the
// in-memory kernel (fakekernel_test.go): no root needed. Each expected
// value is a dump of the fake kernel. The real kernel proves the same
// behaviour in table_test.go and nlmsg_test.go (as root).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/internal/testutil"
)

// foreign are routes that are not the table's: another table, another
// protocol of ours, a static route. Every dump must keep them.
var foreign = []string{
	"100 201 10.244.0.1/32 dev up0 scope link",
	"main 202 10.60.0.0/24 via 198.18.1.2 dev up0",
	"main static 10.9.0.0/24 via 198.18.1.9 dev up0",
}

// fakeHost is a fake kernel with an uplink up0 (198.18.1.1/24,
// fd00:18::1/64), two workload interfaces cxa0 and cxa1, the foreign
// routes, and a table of protocol 201 on it.
type fakeHost struct {
	fk  *fakeKernel
	tbl *Table
}

func newFakeHost(t *testing.T, opts Options) *fakeHost {
	t.Helper()
	fk := newFakeKernel()
	for _, l := range []string{"up0", "cxa0", "cxa1"} {
		fk.handLink(l, true, true)
	}
	fk.connect("198.18.1.0/24", "up0")
	fk.connect("fd00:18::/64", "up0")
	for _, f := range []struct {
		table, proto int
		r            Route
	}{
		{100, ProtoWorkload, dev("10.244.0.1/32", "up0")},
		{unix.RT_TABLE_MAIN, ProtoBGP, via("10.60.0.0/24", "198.18.1.2")},
		{unix.RT_TABLE_MAIN, unix.RTPROT_STATIC, via("10.9.0.0/24", "198.18.1.9")},
	} {
		if err := fk.handRoute(f.table, f.proto, f.r, 0, true); err != nil {
			t.Fatal(err)
		}
	}
	if opts.Protocol == 0 {
		opts.Protocol = ProtoWorkload
	}
	tbl, err := newWithKernel(opts, fk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Close)
	return &fakeHost{fk: fk, tbl: tbl}
}

// watch subscribes the table as Run does, without Run's background
// passes: every pass is an Apply of the test's.
func (h *fakeHost) watch(t *testing.T) chan error {
	t.Helper()
	failed := make(chan error, 1)
	stop, err := h.tbl.startWatch(failed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return failed
}

// wantDump fails unless the kernel holds exactly the foreign routes and
// ours.
func (h *fakeHost) wantDump(t *testing.T, step string, ours ...string) {
	t.Helper()
	want := append(slices.Clone(foreign), ours...)
	slices.Sort(want)
	if got := h.fk.dump(); got != strings.Join(want, "\n") {
		t.Fatalf("%s: kernel holds\n%s\nwant\n%s", step, got, strings.Join(want, "\n"))
	}
}

// fakeState is one whole desired state and the interfaces it runs with.
type fakeState struct {
	name    string
	cxa1    string // "up", "down" or "absent"
	routes  []Route
	want    []string // our routes in the dump
	pending int
	wantErr string // an Apply error must name this
}

func many(n int) ([]Route, []string) {
	var rs []Route
	var lines []string
	for i := range n {
		dst := fmt.Sprintf("10.244.%d.%d/32", 4+i/256, i%256)
		rs = append(rs, dev(dst, "cxa0"))
		lines = append(lines, "main 201 "+dst+" dev cxa0 scope link")
	}
	return rs, lines
}

func fakeStates() []fakeState {
	src := via("10.3.0.0/24", "198.18.1.2")
	src.Src = netip.MustParseAddr("198.18.1.1")
	onlink := via("10.5.0.0/24", "10.99.0.1")
	onlink.LinkName = "cxa0"
	manyRoutes, manyLines := many(300)
	return []fakeState{
		{name: "empty", cxa1: "up"},
		{
			name: "workloads", cxa1: "up",
			routes: []Route{
				dev("10.244.0.1/32", "cxa0"), dev("10.244.0.2/32", "cxa1"), blackhole("10.244.1.0/26"),
				dev("fd00:244::1/128", "cxa0"), blackhole("fd00:244:1::/122"),
			},
			want: []string{
				"main 201 10.244.0.1/32 dev cxa0 scope link",
				"main 201 10.244.0.2/32 dev cxa1 scope link",
				"main 201 blackhole 10.244.1.0/26",
				"main 201 fd00:244::1/128 dev cxa0",
				"main 201 blackhole fd00:244:1::/122",
			},
		},
		{
			name: "moved", cxa1: "up",
			routes: []Route{
				dev("10.244.0.1/32", "cxa1"), dev("10.244.0.3/32", "cxa0"), blackhole("10.244.1.0/26"),
				via("fd00:244::1/128", "fd00:18::2"),
			},
			want: []string{
				"main 201 10.244.0.1/32 dev cxa1 scope link",
				"main 201 10.244.0.3/32 dev cxa0 scope link",
				"main 201 blackhole 10.244.1.0/26",
				"main 201 fd00:244::1/128 via fd00:18::2 dev up0",
			},
		},
		{
			name: "gateways", cxa1: "up",
			routes: []Route{
				via("10.50.0.0/24", "198.18.1.3", "198.18.1.2"), onlink, src, via("0.0.0.0/0", "198.18.1.254"),
				via("fd00:50::/64", "fd00:18::3", "fd00:18::2"),
			},
			want: []string{
				"main 201 10.50.0.0/24 nexthop via 198.18.1.2 dev up0 nexthop via 198.18.1.3 dev up0",
				"main 201 10.5.0.0/24 via 10.99.0.1 dev cxa0 onlink",
				"main 201 10.3.0.0/24 via 198.18.1.2 dev up0 src 198.18.1.1",
				"main 201 0.0.0.0/0 via 198.18.1.254 dev up0",
				"main 201 fd00:50::/64 nexthop via fd00:18::2 dev up0 nexthop via fd00:18::3 dev up0",
			},
		},
		{
			name: "link down", cxa1: "down",
			routes: []Route{dev("10.244.0.1/32", "cxa1"), dev("10.244.0.3/32", "cxa0"), blackhole("10.244.1.0/26")},
			want: []string{
				"main 201 10.244.0.3/32 dev cxa0 scope link",
				"main 201 blackhole 10.244.1.0/26",
			},
			pending: 1,
		},
		{
			name: "link absent", cxa1: "absent",
			routes:  []Route{dev("10.244.0.2/32", "cxa1"), dev("fd00:244::2/128", "cxa1"), blackhole("10.244.1.0/26")},
			want:    []string{"main 201 blackhole 10.244.1.0/26"},
			pending: 2,
		},
		{name: "many", cxa1: "up", routes: manyRoutes, want: manyLines},
		{
			name: "conflict", cxa1: "up",
			routes:  []Route{blackhole("10.9.0.0/24"), dev("10.244.0.1/32", "cxa0")},
			want:    []string{"main 201 10.244.0.1/32 dev cxa0 scope link"},
			wantErr: "10.9.0.0/24",
		},
	}
}

// enter sets the interfaces of s and applies its routes; the kernel must
// then hold exactly s.want.
func (h *fakeHost) enter(t *testing.T, s fakeState, step string) {
	t.Helper()
	h.fk.handLink("cxa1", s.cxa1 != "absent", s.cxa1 == "up")
	if err := h.tbl.SetRoutes(s.routes); err != nil {
		t.Fatalf("%s: SetRoutes: %v", step, err)
	}
	h.applyState(t, s, step)
}

func (h *fakeHost) applyState(t *testing.T, s fakeState, step string) {
	t.Helper()
	err := h.tbl.Apply(context.Background())
	switch {
	case s.wantErr == "" && err != nil:
		t.Fatalf("%s: Apply: %v", step, err)
	case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
		t.Fatalf("%s: Apply error %v, want one naming %s", step, err, s.wantErr)
	}
	h.wantDump(t, step, s.want...)
	if st := h.tbl.Stats(); st.Pending != s.pending {
		t.Fatalf("%s: %d routes pending, want %d", step, st.Pending, s.pending)
	}
}

// settled checks that applying the state again writes nothing.
func (h *fakeHost) settled(t *testing.T, s fakeState, step string) {
	t.Helper()
	before := h.fk.written
	h.applyState(t, s, step+", again")
	if n := h.fk.written - before; n != 0 {
		t.Fatalf("%s: applying the same state again wrote %d routes", step, n)
	}
}

// Every state can follow every other: each ordered pair in turn, with and
// without live events.
func TestFakeEveryStateFollowsEveryOther(t *testing.T) {
	for _, watched := range []bool{false, true} {
		t.Run(fmt.Sprintf("watched=%v", watched), func(t *testing.T) {
			h := newFakeHost(t, Options{})
			if watched {
				h.watch(t)
			}
			states := fakeStates()
			for _, a := range states {
				for _, b := range states {
					if a.name == b.name {
						continue
					}
					h.enter(t, a, a.name)
					h.enter(t, b, a.name+" -> "+b.name)
					h.settled(t, b, a.name+" -> "+b.name)
				}
			}
		})
	}
}

// Random walks through the states with drift made by hand and failed
// writes in between: whatever happened, the next clean Apply reaches the
// state's dump.
func TestFakeRandomWalksWithDriftAndFailures(t *testing.T) {
	for seed := range uint64(6) {
		watched := seed%2 == 1
		t.Run(fmt.Sprintf("seed=%d,watched=%v", seed, watched), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 10))
			h := newFakeHost(t, Options{})
			if watched {
				h.watch(t)
			}
			states := fakeStates()
			for step := range 60 {
				s := states[rng.IntN(len(states))]
				name := fmt.Sprintf("step %d (%s)", step, s.name)
				h.fk.handLink("cxa1", s.cxa1 != "absent", s.cxa1 == "up")
				if err := h.tbl.SetRoutes(s.routes); err != nil {
					t.Fatal(err)
				}
				// Some writes of the first try fail.
				if rng.IntN(3) == 0 {
					frac := rng.Float64()
					h.fk.failWrite = func(fakeWrite) error {
						if rng.Float64() < frac {
							return unix.EIO
						}
						return nil
					}
					_ = h.tbl.Apply(context.Background())
					h.fk.failWrite = nil
				}
				h.drift(t, rng)
				h.applyState(t, s, name)
				h.settled(t, s, name)
			}
		})
	}
}

// drift changes the kernel by hand: one of our routes deleted or replaced,
// a stray route of ours added, or a second route of ours at a destination
// (another metric).
func (h *fakeHost) drift(t *testing.T, rng *rand.Rand) {
	t.Helper()
	var ours []netip.Prefix
	h.fk.mu.Lock()
	for _, r := range h.fk.routes {
		if r.protocol == ProtoWorkload && r.table == unix.RT_TABLE_MAIN {
			ours = append(ours, r.dst)
		}
	}
	h.fk.mu.Unlock()
	main := unix.RT_TABLE_MAIN
	for range rng.IntN(3) {
		switch rng.IntN(4) {
		case 0:
			if len(ours) > 0 {
				h.fk.handDelete(main, ProtoWorkload, ours[rng.IntN(len(ours))])
			}
		case 1:
			if len(ours) > 0 {
				_ = h.fk.handRoute(main, ProtoWorkload, blackhole(ours[rng.IntN(len(ours))].String()), 0, false)
			}
		case 2:
			_ = h.fk.handRoute(main, ProtoWorkload, blackhole("10.244.99.0/24"), 0, false)
		case 3:
			if len(ours) > 0 {
				p := ours[rng.IntN(len(ours))]
				if p.Addr().Is4() {
					_ = h.fk.handRoute(main, ProtoWorkload, blackhole(p.String()), 50, true)
				}
			}
		}
	}
}

// A route of another protocol in the way is never overwritten: the add is
// refused, the table re-reads once to be sure, names it in its error, does
// the rest, and writes it once the slot is free.
func TestFakeConflictWithForeignRoute(t *testing.T) {
	h := newFakeHost(t, Options{})
	h.watch(t)
	mustSet(t, h.tbl, blackhole("10.9.0.0/24"), dev("10.244.0.1/32", "cxa0"))
	resyncs := h.tbl.Stats().Resyncs
	err := h.tbl.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10.9.0.0/24") || !errors.Is(err, unix.EEXIST) {
		t.Fatalf("Apply = %v, want EEXIST naming 10.9.0.0/24", err)
	}
	if n := h.tbl.Stats().Resyncs - resyncs; n != 1 {
		t.Fatalf("%d re-reads, want the first one only", n)
	}
	h.wantDump(t, "conflict", "main 201 10.244.0.1/32 dev cxa0 scope link")
	// Watching, the next Apply needs no re-read but for the refused add.
	resyncs = h.tbl.Stats().Resyncs
	if err := h.tbl.Apply(context.Background()); err == nil || !strings.Contains(err.Error(), "10.9.0.0/24") {
		t.Fatalf("second Apply = %v, want the conflict again", err)
	}
	if n := h.tbl.Stats().Resyncs - resyncs; n != 1 {
		t.Fatalf("%d re-reads, want one for the conflict", n)
	}
	h.fk.handDelete(unix.RT_TABLE_MAIN, unix.RTPROT_STATIC, netip.MustParsePrefix("10.9.0.0/24"))
	foreignBefore := foreign
	foreign = foreign[:2]
	defer func() { foreign = foreignBefore }()
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply once the slot is free: %v", err)
	}
	h.wantDump(t, "slot free", "main 201 10.244.0.1/32 dev cxa0 scope link", "main 201 blackhole 10.9.0.0/24")
}

// An add that finds one of our own routes the table has not heard of (the
// event is late) is not an error: the re-read shows it, and it is
// replaced.
func TestFakeConflictWithOurOwnUnseenRoute(t *testing.T) {
	h := newFakeHost(t, Options{})
	h.watch(t)
	mustSet(t, h.tbl, dev("10.244.0.1/32", "cxa0"))
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Someone writes a route of ours and the table does not hear of it.
	saved := h.fk.sub
	h.fk.sub = nil
	if err := h.fk.handRoute(unix.RT_TABLE_MAIN, ProtoWorkload, dev("10.244.0.7/32", "cxa1"), 0, true); err != nil {
		t.Fatal(err)
	}
	h.fk.sub = saved
	if err := h.tbl.ApplyRoute(context.Background(), dev("10.244.0.7/32", "cxa0")); err != nil {
		t.Fatalf("ApplyRoute over our own unseen route: %v", err)
	}
	h.wantDump(t, "replaced", "main 201 10.244.0.1/32 dev cxa0 scope link", "main 201 10.244.0.7/32 dev cxa0 scope link")
}

// A device route waits for its interface: pending while it is missing or
// down, written when it comes up (heard as an event), flushed with it by
// the kernel and pending again, and rewritten through the new interface
// when one of the same name replaces it.
func TestFakePendingRouteFollowsLink(t *testing.T) {
	h := newFakeHost(t, Options{})
	h.watch(t)
	ctx := context.Background()
	err := h.tbl.ApplyRoute(ctx, dev("10.244.0.9/32", "cxlate"))
	if !errors.Is(err, ErrLinkPending) {
		t.Fatalf("ApplyRoute through a missing interface = %v, want ErrLinkPending", err)
	}
	if err := h.tbl.Apply(ctx); err != nil {
		t.Fatalf("Apply with a pending route: %v", err)
	}
	h.wantDump(t, "missing")
	if st := h.tbl.Stats(); st.Pending != 1 || st.Errors != 0 {
		t.Fatalf("stats %+v, want 1 pending, no error", st)
	}
	h.fk.handLink("cxlate", true, false)
	if err := h.tbl.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "down")
	resyncs := h.tbl.Stats().Resyncs
	h.fk.handLink("cxlate", true, true)
	if err := h.tbl.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "up", "main 201 10.244.0.9/32 dev cxlate scope link")
	h.fk.handLink("cxlate", true, false)
	if err := h.tbl.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "down again")
	if st := h.tbl.Stats(); st.Pending != 1 {
		t.Fatalf("%d pending after the interface went down, want 1", st.Pending)
	}
	h.fk.handLink("cxlate", false, false)
	h.fk.handLink("cxlate", true, true) // a new interface, a new index
	if err := h.tbl.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "recreated", "main 201 10.244.0.9/32 dev cxlate scope link")
	if n := h.tbl.Stats().Resyncs - resyncs; n != 0 {
		t.Fatalf("%d re-reads: the link events alone should have been enough", n)
	}
}

// An interface that goes away between the lookup and the write makes the
// route pending, not an error.
func TestFakeLinkGoneDuringWrite(t *testing.T) {
	h := newFakeHost(t, Options{})
	h.fk.onWrite = func(fk *fakeKernel, w fakeWrite) {
		if w.dst == netip.MustParsePrefix("10.244.0.2/32") {
			fk.handLink("cxa1", false, false)
		}
	}
	mustSet(t, h.tbl, dev("10.244.0.1/32", "cxa0"), dev("10.244.0.2/32", "cxa1"))
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	h.wantDump(t, "gone", "main 201 10.244.0.1/32 dev cxa0 scope link")
	if st := h.tbl.Stats(); st.Pending != 1 || st.Errors != 0 {
		t.Fatalf("stats %+v, want 1 pending and no error", st)
	}
}

// A batch with failures in it: each failure is reported against its own
// route, the rest is written, and the next Apply writes only what failed.
func TestFakePartialBatchFailures(t *testing.T) {
	h := newFakeHost(t, Options{})
	set, lines := many(600) // three batches
	mustSet(t, h.tbl, set...)
	failed := 0
	h.fk.failWrite = func(w fakeWrite) error {
		if w.dst.Addr().As4()[3]%7 == 0 {
			failed++
			return unix.EIO
		}
		return nil
	}
	err := h.tbl.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10.244.4.7/32") || !strings.Contains(err.Error(), "10.244.6.77/32") {
		t.Fatalf("Apply = %v, want every failed route named", err)
	}
	if got := strings.Count(err.Error(), "input/output error"); got != failed {
		t.Fatalf("%d failures reported, %d injected", got, failed)
	}
	if st := h.tbl.Stats(); st.Added != uint64(600-failed) || st.Errors != uint64(failed) {
		t.Fatalf("stats %+v, want %d added and %d errors", st, 600-failed, failed)
	}
	h.fk.failWrite = nil
	before := h.fk.written
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := h.fk.written - before; n != failed {
		t.Fatalf("the retry wrote %d routes, want the %d that failed", n, failed)
	}
	h.wantDump(t, "retried", lines...)
}

// A socket failure fails every request of the batch; nothing is lost.
func TestFakeSocketFailure(t *testing.T) {
	h := newFakeHost(t, Options{})
	h.watch(t)
	mustSet(t, h.tbl, dev("10.244.0.1/32", "cxa0"), blackhole("10.244.1.0/26"))
	h.fk.failFlush = fmt.Errorf("sending route requests: %w", unix.ENOBUFS)
	if err := h.tbl.Apply(context.Background()); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("Apply = %v, want ENOBUFS", err)
	}
	h.wantDump(t, "failed")
	h.fk.failFlush = nil
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "retried", "main 201 10.244.0.1/32 dev cxa0 scope link", "main 201 blackhole 10.244.1.0/26")
}

// A delete that finds the route already gone (ESRCH) counts as done.
func TestFakeDeleteOfAGoneRoute(t *testing.T) {
	h := newFakeHost(t, Options{})
	mustSet(t, h.tbl, dev("10.244.0.1/32", "cxa0"))
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustSet(t, h.tbl)
	h.fk.failNext(OpDelete, "10.244.0.1/32", unix.ESRCH)
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply = %v, want ESRCH on delete taken as done", err)
	}
	if st := h.tbl.Stats(); st.Errors != 0 || st.Removed != 0 {
		t.Fatalf("stats %+v: a delete that found nothing is neither an error nor a removal", st)
	}
	// (The injected ESRCH left the route in place: the re-read of the next
	// full pass finds and deletes it.)
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "deleted")
}

// An interrupted dump is read again; one that keeps failing fails the
// Apply, which writes nothing and re-reads next time.
func TestFakeInterruptedDump(t *testing.T) {
	h := newFakeHost(t, Options{})
	mustSet(t, h.tbl, blackhole("10.244.1.0/26"))
	h.fk.dumpFailures = dumpAttempts - 1
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply after %d interrupted dumps: %v", dumpAttempts-1, err)
	}
	mustSet(t, h.tbl, blackhole("10.244.2.0/26"))
	h.fk.dumpFailures = dumpAttempts
	if err := h.tbl.Apply(context.Background()); err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("Apply = %v, want the interrupted dump reported", err)
	}
	h.wantDump(t, "nothing written", "main 201 blackhole 10.244.1.0/26")
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "written", "main 201 blackhole 10.244.2.0/26")
}

// ApplyPrefixes writes those destinations only and does not start Run's
// writing; a table of one family and table leaves the others alone.
func TestFakeApplyPrefixesAndScope(t *testing.T) {
	h := newFakeHost(t, Options{Family: FamilyV4, TableID: 1000})
	if err := h.fk.handRoute(1000, ProtoWorkload, dev("fd00:1::/64", "cxa0"), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := h.tbl.SetRoute(dev("fd00:2::/64", "cxa0")); err == nil {
		t.Fatal("an IPv4 table accepted an IPv6 route")
	}
	mustSet(t, h.tbl, blackhole("10.244.1.0/26"), blackhole("10.244.2.0/26"), dev("10.244.0.1/32", "cxa0"))
	if err := h.tbl.ApplyPrefixes(context.Background(), netip.MustParsePrefix("10.244.2.0/26")); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "one prefix", "1000 201 blackhole 10.244.2.0/26", "1000 201 fd00:1::/64 dev cxa0")
	if h.tbl.InSync() {
		t.Fatal("ApplyPrefixes marked the table in sync")
	}
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.wantDump(t, "all", "1000 201 blackhole 10.244.1.0/26", "1000 201 blackhole 10.244.2.0/26",
		"1000 201 10.244.0.1/32 dev cxa0 scope link", "1000 201 fd00:1::/64 dev cxa0")
}

// Run writes nothing before the owner's first Apply; afterwards it repairs
// drift from events, and renews a lost subscription with a re-read that
// catches what happened while nobody listened.
func TestFakeRunWaitsThenRepairs(t *testing.T) {
	h := newFakeHost(t, Options{CoalesceDelay: time.Millisecond, ResyncInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.tbl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testutil.Eventually(t, 5*time.Second, "watch live", testutil.Holds(h.tbl.isWatching))
	mustSet(t, h.tbl, dev("10.244.0.1/32", "cxa0"))
	h.fk.handLink("cxa1", true, false) // an event: Run looks, but may not write
	time.Sleep(50 * time.Millisecond)
	h.wantDump(t, "before the first Apply")
	if err := h.tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "main 201 10.244.0.1/32 dev cxa0 scope link"
	dst := netip.MustParsePrefix("10.244.0.1/32")
	present := func() error {
		if !strings.Contains(h.fk.dump(), want) {
			return errors.New("route missing")
		}
		return nil
	}
	h.fk.handDelete(unix.RT_TABLE_MAIN, ProtoWorkload, dst)
	testutil.Eventually(t, 5*time.Second, "hand-deleted route restored", present)

	resyncs := h.tbl.Stats().Resyncs
	h.fk.loseSubscription(fmt.Errorf("reading route events: %w", unix.ENOBUFS))
	h.fk.handDelete(unix.RT_TABLE_MAIN, ProtoWorkload, dst) // nobody hears this
	testutil.Eventually(t, 5*time.Second, "route restored after the renewal", present)
	if h.tbl.Stats().Resyncs == resyncs {
		t.Fatal("the subscription was renewed without a re-read")
	}
}
