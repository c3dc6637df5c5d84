package routes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/calyx-net/calyx/internal/netnstest"
	"github.com/calyx-net/calyx/internal/testutil"
)

func TestTableAddReplaceDelete(t *testing.T) {
	ns := newTestNS(t, "ard")
	tbl := newTestTable(t, ns, Options{})
	ctx := context.Background()

	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"), blackhole("10.244.1.0/26"), dev("10.244.0.3/32", "cxa0"))
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{
		"10.244.0.1":    "dev cxa0 scope link",
		"10.244.0.3":    "dev cxa0 scope link",
		"10.244.1.0/26": "blackhole",
	})

	mustSet(t, tbl, dev("10.244.0.1/32", "cxa1"), dev("10.244.0.2/32", "cxa0"), dev("10.244.0.3/32", "cxa0"))
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{
		"10.244.0.1": "dev cxa1 scope link",
		"10.244.0.2": "dev cxa0 scope link",
		"10.244.0.3": "dev cxa0 scope link",
	})
	st := tbl.Stats()
	if st.Added != 4 || st.Replaced != 1 || st.Removed != 1 || st.Errors != 0 {
		t.Fatalf("stats %+v, want 4 added, 1 replaced, 1 removed, 0 errors", st)
	}

	tbl.DeleteRoute(netip.MustParsePrefix("10.244.0.2/32"))
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("third Apply: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{
		"10.244.0.1": "dev cxa1",
		"10.244.0.3": "dev cxa0",
	})
}

// A second Apply of the same set must not write: checked both by the
// table's counters and by the kernel's route events.
func TestTableApplyWritesOnlyDifferences(t *testing.T) {
	ns := newTestNS(t, "diff")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	ns.MustRun(t, "ip", "addr", "add", "fd00:18::1/64", "dev", "cxa0", "nodad")
	tbl := newTestTable(t, ns, Options{})
	ctx := context.Background()

	var set []Route
	for i := range 50 {
		set = append(set, dev(fmt.Sprintf("10.244.0.%d/32", i+1), "cxa0"))
	}
	set = append(set,
		blackhole("10.244.1.0/26"),
		via("10.50.0.0/24", "198.18.1.2", "198.18.1.3"),
		via("10.51.0.0/24", "198.18.1.2"),
		dev("fd00:244::1/128", "cxa0"),
		blackhole("fd00:244:1::/122"),
		via("fd00:50::/64", "fd00:18::2", "fd00:18::3"),
		via("fd00:51::/64", "fd00:18::2"),
	)
	mustSet(t, tbl, set...)
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	before := tbl.Stats()
	if before.Added != uint64(len(set)) {
		t.Fatalf("first Apply added %d routes, want %d", before.Added, len(set))
	}

	events := watchRoutes(t, ns)
	mustSet(t, tbl, set...) // the same set again, as a fresh slice
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	after := tbl.Stats()
	if after.Writes() != before.Writes() || after.Errors != 0 {
		t.Fatalf("second Apply wrote: before %+v after %+v", before, after)
	}
	if n := events.oursBeforeMarker(t, ns, ProtoWorkload); n != 0 {
		t.Fatalf("second Apply caused %d route events of protocol %d, want 0", n, ProtoWorkload)
	}
}

func TestTableLeavesOtherProtocolsAlone(t *testing.T) {
	ns := newTestNS(t, "other")
	ns.MustRun(t, "ip", "route", "add", "10.245.0.0/24", "dev", "cxa0", "proto", "static")
	ns.MustRun(t, "ip", "route", "add", "10.245.1.0/24", "dev", "cxa0", "proto", "202")
	ns.MustRun(t, "ip", "route", "add", "10.245.2.0/24", "dev", "cxa0", "proto", "201") // a leftover of ours
	tbl := newTestTable(t, ns, Options{})

	// 10.245.0.0/24 is taken by a static route: the table must refuse to
	// overwrite it and say so, and still do the rest.
	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"), blackhole("10.245.0.0/24"))
	err := tbl.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10.245.0.0/24") {
		t.Fatalf("Apply error = %v, want one naming 10.245.0.0/24", err)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.244.0.1": "dev cxa0"})
	wantRoutes(t, ns, "static", map[string]string{"10.245.0.0/24": "dev cxa0"})
	wantRoutes(t, ns, "202", map[string]string{"10.245.1.0/24": "dev cxa0"})
}

func TestTableRepairsDriftQuickly(t *testing.T) {
	ns := newTestNS(t, "drift")
	tbl := newTestTable(t, ns, Options{ResyncInterval: time.Hour})
	runTable(t, tbl)
	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"), dev("10.244.0.2/32", "cxa0"), blackhole("10.244.1.0/26"))
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := map[string]string{"10.244.0.1": "dev cxa0", "10.244.0.2": "dev cxa0", "10.244.1.0/26": "blackhole"}
	wantRoutes(t, ns, "201", want)

	ns.MustRun(t, "ip", "route", "del", "10.244.0.1/32")
	ns.MustRun(t, "ip", "route", "replace", "10.244.0.2/32", "dev", "cxa1", "proto", "201")
	ns.MustRun(t, "ip", "route", "del", "blackhole", "10.244.1.0/26")
	ns.MustRun(t, "ip", "route", "add", "10.244.9.0/24", "dev", "cxa0", "proto", "201")
	took := testutil.Eventually(t, 3*time.Second, "hand-made changes undone", testutil.Holds(func() bool {
		got := kernelRoutes(t, ns, "201")
		return len(got) == 3 && strings.Contains(got["10.244.0.1"], "cxa0") &&
			strings.Contains(got["10.244.0.2"], "cxa0") && strings.Contains(got["10.244.1.0/26"], "blackhole")
	}))
	t.Logf("drift repaired in %v", took)
}

func TestTableWaitsForOwnerBeforeWriting(t *testing.T) {
	ns := newTestNS(t, "insync")
	tbl := newTestTable(t, ns, Options{ResyncInterval: time.Hour, CoalesceDelay: 10 * time.Millisecond})
	runTable(t, tbl)
	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"))
	// A route of ours from a previous run, and an event to wake Run.
	ns.MustRun(t, "ip", "route", "add", "10.246.0.0/24", "dev", "cxa0", "proto", "201")
	time.Sleep(300 * time.Millisecond)
	if st := tbl.Stats(); st.Writes() != 0 || tbl.InSync() {
		t.Fatalf("Run wrote before the owner's first Apply: %+v", st)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.246.0.0/24": "dev cxa0"})

	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.244.0.1": "dev cxa0"})
}

func TestTablePendingRouteFollowsLink(t *testing.T) {
	ns := newTestNS(t, "pend")
	tbl := newTestTable(t, ns, Options{ResyncInterval: time.Hour})
	runTable(t, tbl)
	mustSet(t, tbl, dev("10.244.0.9/32", "cxlate0"), dev("10.244.0.1/32", "cxa0"))
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply with a missing interface: %v", err)
	}
	if st := tbl.Stats(); st.Pending != 1 {
		t.Fatalf("Pending = %d, want 1", st.Pending)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.244.0.1": "dev cxa0"})

	appear := func() {
		ns.MustRun(t, "ip", "link", "add", "cxlate0", "type", "veth", "peer", "name", "cxlate1")
		ns.MustRun(t, "ip", "link", "set", "cxlate0", "up")
	}
	appear()
	took := testutil.Eventually(t, 3*time.Second, "pending route written", testutil.Holds(func() bool {
		return strings.Contains(kernelRoutes(t, ns, "201")["10.244.0.9"], "dev cxlate0")
	}))
	t.Logf("pending route written %v after its interface came up", took)

	// The interface goes away (taking the route) and comes back.
	ns.MustRun(t, "ip", "link", "del", "cxlate0")
	testutil.Eventually(t, 3*time.Second, "route pending again", testutil.Holds(func() bool { return tbl.Stats().Pending == 1 }))
	appear()
	testutil.Eventually(t, 3*time.Second, "route back with the interface", testutil.Holds(func() bool {
		return strings.Contains(kernelRoutes(t, ns, "201")["10.244.0.9"], "dev cxlate0")
	}))
	if st := tbl.Stats(); st.Errors != 0 {
		t.Fatalf("errors while following the interface: %+v", st)
	}
}

func TestTableECMP(t *testing.T) {
	ns := newTestNS(t, "ecmp")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	tbl := newTestTable(t, ns, Options{Protocol: ProtoBGP, Family: FamilyV4})
	ctx := context.Background()

	mustSet(t, tbl, via("10.50.0.0/24", "198.18.1.3", "198.18.1.2"))
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	line := kernelRoutes(t, ns, "202")["10.50.0.0/24"]
	if !strings.Contains(line, "nexthop via 198.18.1.2") || !strings.Contains(line, "nexthop via 198.18.1.3") {
		t.Fatalf("ECMP route = %q, want next hops 198.18.1.2 and 198.18.1.3", line)
	}
	writes := tbl.Stats().Writes()
	if err := tbl.Apply(ctx); err != nil || tbl.Stats().Writes() != writes {
		t.Fatalf("re-Apply of the same ECMP route wrote (err %v, stats %+v)", err, tbl.Stats())
	}

	mustSet(t, tbl, via("10.50.0.0/24", "198.18.1.2"))
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("Apply single next hop: %v", err)
	}
	line = kernelRoutes(t, ns, "202")["10.50.0.0/24"]
	if !strings.Contains(line, "via 198.18.1.2 dev cxa0") || strings.Contains(line, "nexthop") {
		t.Fatalf("route = %q, want a single next hop 198.18.1.2", line)
	}
	if err := tbl.SetRoute(via("fd00::/64", "fd00:18::2")); err == nil {
		t.Fatalf("IPv6 route accepted by an IPv4-only table")
	}
}

func TestTableIPv6(t *testing.T) {
	ns := newTestNS(t, "v6")
	ns.MustRun(t, "ip", "addr", "add", "fd00:18::1/64", "dev", "cxa0", "nodad")
	tbl := newTestTable(t, ns, Options{Family: FamilyV6})
	ctx := context.Background()

	mustSet(t, tbl,
		dev("fd00:244::1/128", "cxa0"),
		blackhole("fd00:244:1::/122"),
		via("fd00:50::/64", "fd00:18::2", "fd00:18::3"),
		via("fd00:51::/64", "fd00:18::2"),
	)
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{
		"fd00:244::1":      "dev cxa0",
		"fd00:244:1::/122": "blackhole",
		"fd00:50::/64":     "nexthop via fd00:18::2",
		"fd00:51::/64":     "via fd00:18::2 dev cxa0",
	})
	if !strings.Contains(kernelRoutes(t, ns, "201")["fd00:50::/64"], "nexthop via fd00:18::3") {
		t.Fatalf("IPv6 ECMP route lost a next hop: %v", kernelRoutes(t, ns, "201"))
	}
	writes := tbl.Stats().Writes()
	if err := tbl.Apply(ctx); err != nil || tbl.Stats().Writes() != writes {
		t.Fatalf("re-Apply of the same IPv6 set wrote (err %v, stats %+v)", err, tbl.Stats())
	}

	mustSet(t, tbl, dev("fd00:244::1/128", "cxa1"), via("fd00:50::/64", "fd00:18::3"))
	if err := tbl.Apply(ctx); err != nil {
		t.Fatalf("Apply change: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{
		"fd00:244::1":  "dev cxa1",
		"fd00:50::/64": "via fd00:18::3 dev cxa0",
	})
}

func TestTableKeepsGoingAfterFailedWrite(t *testing.T) {
	ns := newTestNS(t, "fail")
	var failing atomic.Bool
	failing.Store(true)
	broken := netip.MustParsePrefix("10.244.0.2/32")
	tbl := newTestTable(t, ns, Options{BeforeWrite: func(op WriteOp, dst netip.Prefix) error {
		if failing.Load() && dst == broken {
			return errors.New("injected failure")
		}
		return nil
	}})
	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"), dev("10.244.0.2/32", "cxa0"), dev("10.244.0.3/32", "cxa0"))
	err := tbl.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10.244.0.2/32") {
		t.Fatalf("Apply error = %v, want one naming 10.244.0.2/32", err)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.244.0.1": "cxa0", "10.244.0.3": "cxa0"})
	if st := tbl.Stats(); st.Errors != 1 || st.Added != 2 {
		t.Fatalf("stats %+v, want 2 added and 1 error", st)
	}

	failing.Store(false)
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("retry Apply: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.244.0.1": "cxa0", "10.244.0.2": "cxa0", "10.244.0.3": "cxa0"})
}

func TestTableApplyRouteWritesOnlyThatRoute(t *testing.T) {
	ns := newTestNS(t, "one")
	tbl := newTestTable(t, ns, Options{})
	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"), dev("10.244.0.2/32", "cxa0"))
	if err := tbl.ApplyRoute(context.Background(), dev("10.244.0.3/32", "cxa1")); err != nil {
		t.Fatalf("ApplyRoute: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.244.0.3": "dev cxa1"})
	if tbl.InSync() {
		t.Fatalf("ApplyRoute marked the table in sync")
	}
	err := tbl.ApplyRoute(context.Background(), dev("10.244.0.4/32", "cxnope"))
	if !errors.Is(err, ErrLinkPending) {
		t.Fatalf("ApplyRoute via a missing interface: %v, want ErrLinkPending", err)
	}
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantRoutes(t, ns, "201", map[string]string{"10.244.0.1": "cxa0", "10.244.0.2": "cxa0", "10.244.0.3": "cxa1"})
}

func TestTableRejectsBadRoutes(t *testing.T) {
	tbl := &Table{opts: Options{Family: FamilyBoth}, desired: newDesired(), dirty: map[netip.Prefix]struct{}{}}
	bad := []Route{
		{Type: RouteDevice, LinkName: "cxa0"},
		dev("10.0.0.1/24", "cxa0"),
		dev("10.0.0.1/32", "a-name-longer-than-15"),
		{Dst: netip.MustParsePrefix("10.0.0.0/24"), Type: RouteDevice},
		via("10.0.0.0/24"),
		via("10.0.0.0/24", "fd00::1"),
		via("fd00::/64", "fe80::1"),
		via("10.0.0.0/24", "10.1.0.1", "10.1.0.1"),
		{Dst: netip.MustParsePrefix("10.0.0.0/24"), Type: RouteBlackhole, LinkName: "cxa0"},
		dev("::ffff:10.0.0.1/128", "cxa0"),
		{Dst: netip.MustParsePrefix("10.0.0.1/32"), Type: RouteDevice, LinkName: "cxa0", Src: netip.MustParseAddr("fd00::1")},
	}
	for _, r := range bad {
		if err := tbl.SetRoute(r); err == nil {
			t.Errorf("SetRoute(%s) accepted", r)
		}
	}
	if err := tbl.SetRoutes([]Route{dev("10.0.0.1/32", "cxa0"), dev("10.0.0.1/32", "cxa1")}); err == nil {
		t.Errorf("SetRoutes with a destination twice accepted")
	}
	if _, err := New(Options{Protocol: 4}); err == nil {
		t.Errorf("New accepted protocol 4 (static)")
	}
}

func mustSet(t testing.TB, tbl *Table, routes ...Route) {
	t.Helper()
	if err := tbl.SetRoutes(routes); err != nil {
		t.Fatalf("SetRoutes: %v", err)
	}
}

// routeWatch records the route events of a namespace.
type routeWatch struct {
	ch <-chan netlink.RouteUpdate
}

func watchRoutes(t testing.TB, ns netnstest.NS) *routeWatch {
	t.Helper()
	h, err := vns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ch := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() {
		close(done)
		go drainUntilClosed(ch)
	})
	return &routeWatch{ch: ch}
}

// oursBeforeMarker writes a marker route of another protocol and counts the
// events of proto that arrive before the marker's: events on one socket
// arrive in order, so once the marker is seen nothing earlier is missing.
func (w *routeWatch) oursBeforeMarker(t testing.TB, ns netnstest.NS, proto int) int {
	t.Helper()
	ns.MustRun(t, "ip", "route", "add", "10.99.99.0/24", "dev", "cxa0", "proto", "99")
	n := 0
	deadline := time.After(5 * time.Second)
	for {
		select {
		case u := <-w.ch:
			if int(u.Protocol) == 99 {
				return n
			}
			if int(u.Protocol) == proto {
				t.Logf("unexpected event: type %d %s", u.Type, u.Route)
				n++
			}
		case <-deadline:
			t.Fatalf("marker route event not seen")
		}
	}
}

// With Run watching, the echo of the table's own writes (including IPv6
// multipath routes, which the kernel may report hop by hop) must not make
// it write again, while a hand-made change is still seen.
func TestTableSettlesUnderItsOwnEvents(t *testing.T) {
	ns := newTestNS(t, "settle")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	ns.MustRun(t, "ip", "addr", "add", "fd00:18::1/64", "dev", "cxa0", "nodad")
	tbl := newTestTable(t, ns, Options{ResyncInterval: time.Hour, CoalesceDelay: 10 * time.Millisecond})
	runTable(t, tbl)
	mustSet(t, tbl,
		dev("10.244.0.1/32", "cxa0"),
		blackhole("10.244.1.0/26"),
		via("10.50.0.0/24", "198.18.1.2", "198.18.1.3"),
		dev("fd00:244::1/128", "cxa0"),
		blackhole("fd00:244:1::/122"),
		via("fd00:50::/64", "fd00:18::2", "fd00:18::3"),
		via("fd00:51::/64", "fd00:18::2"),
	)
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	first := tbl.Stats()
	time.Sleep(300 * time.Millisecond)
	second := tbl.Stats()
	if first.Writes() != 7 || second.Writes() != first.Writes() || second.Errors != 0 {
		t.Fatalf("table kept writing after its own events: after apply %+v, later %+v", first, second)
	}
	// The echoes are dropped by the socket's filter before they reach the
	// table; a change made by someone else still gets through (the watch
	// is live, so the quiet above is not for want of listening).
	ns.MustRun(t, "ip", "-6", "route", "del", "fd00:51::/64")
	testutil.Eventually(t, 3*time.Second, "hand-deleted IPv6 route restored", testutil.Holds(func() bool {
		return strings.Contains(kernelRoutes(t, ns, "201")["fd00:51::/64"], "via fd00:18::2")
	}))
}

// A restarted agent finds its routes in the kernel: with the same desired
// set its first Apply must write nothing.
func TestTableRestartDoesNotRewrite(t *testing.T) {
	ns := newTestNS(t, "restart")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	set := []Route{
		dev("10.244.0.1/32", "cxa0"), blackhole("10.244.1.0/26"),
		via("10.50.0.0/24", "198.18.1.2", "198.18.1.3"), dev("fd00:244::1/128", "cxa1"),
	}
	first := newTestTable(t, ns, Options{})
	mustSet(t, first, set...)
	if err := first.Apply(context.Background()); err != nil {
		t.Fatalf("first run Apply: %v", err)
	}

	second := newTestTable(t, ns, Options{ResyncInterval: time.Hour})
	runTable(t, second)
	events := watchRoutes(t, ns)
	mustSet(t, second, set...)
	if err := second.Apply(context.Background()); err != nil {
		t.Fatalf("restarted Apply: %v", err)
	}
	if st := second.Stats(); st.Writes() != 0 {
		t.Fatalf("restarted table rewrote routes: %+v", st)
	}
	if n := events.oursBeforeMarker(t, ns, ProtoWorkload); n != 0 {
		t.Fatalf("restart caused %d route events", n)
	}
}

// The CNI ADD path: a veth appears and its route is applied at once, while
// Run has not seen the link event yet and the agent is not in sync.
func TestTableApplyRouteRightAfterLinkAppears(t *testing.T) {
	ns := newTestNS(t, "fresh")
	tbl := newTestTable(t, ns, Options{ResyncInterval: time.Hour})
	runTable(t, tbl)
	for i := range 5 {
		name := fmt.Sprintf("cxnew%d", i)
		ns.MustRun(t, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
		ns.MustRun(t, "ip", "link", "set", name, "up")
		dst := fmt.Sprintf("10.244.2.%d/32", i+1)
		if err := tbl.ApplyRoute(context.Background(), dev(dst, name)); err != nil {
			t.Fatalf("ApplyRoute %s: %v", dst, err)
		}
		if got := kernelRoutes(t, ns, "201")[strings.TrimSuffix(dst, "/32")]; !strings.Contains(got, "dev "+name) {
			t.Fatalf("route %s = %q right after ApplyRoute", dst, got)
		}
	}
}

// Once the owner has applied, Run writes later desired-state changes by
// itself: a SetRoutes, SetRoute or DeleteRoute needs no further Apply and
// no kernel event to reach the kernel.
func TestTableRunAppliesSetterChanges(t *testing.T) {
	ns := newTestNS(t, "setter")
	tbl := newTestTable(t, ns, Options{ResyncInterval: time.Hour, CoalesceDelay: 5 * time.Millisecond})
	runTable(t, tbl)
	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"))
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	mustSet(t, tbl, dev("10.244.0.1/32", "cxa0"), blackhole("10.244.1.0/26"))
	testutil.Eventually(t, 3*time.Second, "SetRoutes applied by Run", testutil.Holds(func() bool {
		return len(kernelRoutes(t, ns, "201")) == 2
	}))
	if err := tbl.SetRoute(blackhole("10.244.2.0/26")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 3*time.Second, "SetRoute applied by Run", testutil.Holds(func() bool {
		return len(kernelRoutes(t, ns, "201")) == 3
	}))
	tbl.DeleteRoute(netip.MustParsePrefix("10.244.1.0/26"))
	testutil.Eventually(t, 3*time.Second, "DeleteRoute applied by Run", testutil.Holds(func() bool {
		return len(kernelRoutes(t, ns, "201")) == 2
	}))
}
