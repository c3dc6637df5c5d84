package routes

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/internal/testutil"
	"github.com/calyx-net/calyx/routes/netns"
)

// dumpRaw lists the routes of one family in the namespace with a plain
// RTM_GETROUTE dump, decoded by parseRouteMsg (what the event reader uses).
func dumpRaw(t *testing.T, nsPath string, family int) map[netip.Prefix]kroute {
	t.Helper()
	var fd int
	err := netns.Do(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	req := make([]byte, 0, nlmsgHdrLen+rtmsgLen)
	req = ne.AppendUint32(req, nlmsgHdrLen+rtmsgLen)
	req = ne.AppendUint16(req, unix.RTM_GETROUTE)
	req = ne.AppendUint16(req, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req = ne.AppendUint32(req, 1)
	req = ne.AppendUint32(req, 0)
	req = append(req, byte(family), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	if _, err := unix.Write(fd, req); err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]kroute{}
	buf := make([]byte, 1<<16)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		b := buf[:n]
		for len(b) >= nlmsgHdrLen {
			l := int(ne.Uint32(b))
			typ := ne.Uint16(b[4:])
			if typ == unix.NLMSG_DONE {
				return out
			}
			body := b[nlmsgHdrLen:l]
			b = b[nlAlign(l):]
			h, ok := parseRouteHeader(body)
			if !ok || h.table != unix.RT_TABLE_MAIN || h.protocol != ProtoBGP {
				continue
			}
			p, k, ok := parseRouteMsg(body)
			if !ok {
				t.Fatalf("route message not decoded: % x", body)
			}
			out[p] = k
		}
	}
}

// The event reader decodes the kernel's messages itself; it must see a
// route exactly as the netlink library's decoding (haveKernel) does, for
// every shape the tables write or may find.
func TestParseRouteMsgMatchesNetlink(t *testing.T) {
	ns := newTestNS(t, "parse")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	ns.MustRun(t, "ip", "addr", "add", "fd00:18::1/64", "dev", "cxa0", "nodad")
	for _, r := range []string{
		"10.1.0.0/24 proto 202 dev cxa0 scope link",
		"blackhole 10.2.0.0/24 proto 202",
		"10.3.0.0/24 proto 202 via 198.18.1.2 src 198.18.1.1",
		"10.4.0.0/24 proto 202 nexthop via 198.18.1.2 nexthop via 198.18.1.3",
		"10.5.0.0/24 proto 202 via 10.99.0.1 dev cxa0 onlink",
		"10.6.0.0/24 proto 202 via 198.18.1.2 metric 77",
		"0.0.0.0/0 proto 202 via 198.18.1.254",
		"fd00:1::/64 proto 202 dev cxa0",
		"blackhole fd00:2::/64 proto 202",
		"fd00:4::/64 proto 202 nexthop via fd00:18::2 nexthop via fd00:18::3",
		"fd00:5::/64 proto 202 via fd00:18::2 metric 5",
	} {
		ns.MustRun(t, append([]string{"ip", "route", "add"}, strings.Fields(r)...)...)
	}
	tbl := newTestTable(t, ns, Options{Protocol: ProtoBGP})
	want := map[netip.Prefix]kroute{}
	for _, fam := range tbl.families() {
		a, _, err := tbl.readRoutes(fam)
		if err != nil {
			t.Fatal(err)
		}
		for p, k := range a.All() {
			want[p] = k
		}
	}
	if len(want) != 11 {
		t.Fatalf("netlink lists %d routes of proto 202, want 11: %v", len(want), want)
	}
	got := dumpRaw(t, ns.Path, unix.AF_INET)
	for p, k := range dumpRaw(t, ns.Path, unix.AF_INET6) {
		got[p] = k
	}
	if !reflect.DeepEqual(got, want) {
		for p := range want {
			if !reflect.DeepEqual(got[p], want[p]) {
				t.Errorf("%s: parsed %+v, netlink %+v", p, got[p], want[p])
			}
		}
		t.Fatalf("parsed %d routes, netlink %d", len(got), len(want))
	}
}

// What the batch writer encodes must be what the kernel installs: every
// shape, each compared with iproute2's own reading.
func TestWriterEncodesEveryShape(t *testing.T) {
	ns := newTestNS(t, "enc")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	ns.MustRun(t, "ip", "addr", "add", "fd00:18::1/64", "dev", "cxa0", "nodad")
	tbl := newTestTable(t, ns, Options{Protocol: ProtoBGP})
	src := netip.MustParseAddr("198.18.1.1")
	onlink := via("10.5.0.0/24", "10.99.0.1")
	onlink.LinkName = "cxa0"
	ecmpOnlink := via("10.7.0.0/24", "10.99.0.1", "10.99.0.2")
	ecmpOnlink.LinkName = "cxa0"
	withSrc := via("10.3.0.0/24", "198.18.1.2")
	withSrc.Src = src
	mustSet(t, tbl,
		dev("10.1.0.0/24", "cxa0"), blackhole("10.2.0.0/24"), withSrc,
		via("10.4.0.0/24", "198.18.1.2", "198.18.1.3"), onlink, ecmpOnlink,
		via("0.0.0.0/0", "198.18.1.254"),
		dev("fd00:1::/64", "cxa0"), blackhole("fd00:2::/64"),
		via("fd00:4::/64", "fd00:18::2", "fd00:18::3"), via("fd00:5::/64", "fd00:18::2"))
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantRoutes(t, ns, "202", map[string]string{
		"10.1.0.0/24": "dev cxa0 scope link",
		"10.2.0.0/24": "blackhole 10.2.0.0/24",
		"10.3.0.0/24": "via 198.18.1.2 dev cxa0 src 198.18.1.1",
		"10.4.0.0/24": "nexthop via 198.18.1.2 dev cxa0 weight 1 nexthop via 198.18.1.3 dev cxa0 weight 1",
		"10.5.0.0/24": "via 10.99.0.1 dev cxa0 onlink",
		"10.7.0.0/24": "nexthop via 10.99.0.1 dev cxa0 weight 1 onlink nexthop via 10.99.0.2 dev cxa0 weight 1 onlink",
		"default":     "via 198.18.1.254 dev cxa0",
		"fd00:1::/64": "dev cxa0",
		"fd00:2::/64": "blackhole fd00:2::/64",
		"fd00:4::/64": "nexthop via fd00:18::2 dev cxa0 weight 1 nexthop via fd00:18::3 dev cxa0 weight 1",
		"fd00:5::/64": "via fd00:18::2 dev cxa0",
	})
	// Everything written reads back as written: a second Apply after a
	// full re-read of the kernel writes nothing.
	writes := tbl.Stats().Writes()
	if err := tbl.Apply(context.Background()); err != nil || tbl.Stats().Writes() != writes {
		t.Fatalf("second Apply wrote (err %v, stats %+v)", err, tbl.Stats())
	}
	// And deletes, one batch for all.
	if err := tbl.SetRoutes(nil); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply deleting all: %v", err)
	}
	wantRoutes(t, ns, "202", map[string]string{})
}

// A batch with failures in it reports each one against its own route and
// writes the rest.
func TestWriterBatchWithFailures(t *testing.T) {
	ns := newTestNS(t, "batchfail")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	// A foreign route (another protocol) in the way of one of ours.
	ns.MustRun(t, "ip", "route", "add", "10.9.0.7/32", "via", "198.18.1.9", "proto", "static")
	tbl := newTestTable(t, ns, Options{Protocol: ProtoBGP})
	var set []Route
	for i := range 1000 {
		set = append(set, via(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}).String()+"/32", "198.18.1.2"))
	}
	// An unreachable gateway fails in the kernel (ENETUNREACH).
	set = append(set, via("10.8.0.0/24", "203.0.113.1"))
	mustSet(t, tbl, set...)
	err := tbl.Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10.9.0.7/32") || !strings.Contains(err.Error(), "10.8.0.0/24") {
		t.Fatalf("Apply error %v, want the two failed routes named", err)
	}
	st := tbl.Stats()
	if st.Added != 999 {
		t.Fatalf("stats %+v, want 999 routes added around the two failures", st)
	}
	if got := len(kernelRoutes(t, ns, "202")); got != 999 {
		t.Fatalf("kernel holds %d routes of ours, want 999", got)
	}
}

// UpdateRoutes changes what it is given and nothing else: on a large
// table, changing one route writes one route.
func TestTableUpdateRoutesWritesOnlyTheChange(t *testing.T) {
	ns := newTestNS(t, "upd")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	tbl := newTestTable(t, ns, Options{Protocol: ProtoBGP, ResyncInterval: time.Hour})
	runTable(t, tbl)
	var set []Route
	for i := range 2000 {
		set = append(set, via(netip.AddrFrom4([4]byte{10, 10, byte(i >> 8), byte(i)}).String()+"/32", "198.18.1.2"))
	}
	mustSet(t, tbl, set...)
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := tbl.Stats()
	if err := tbl.UpdateRoutes(
		[]Route{via("10.10.0.5/32", "198.18.1.3"), via("10.10.0.6/32", "198.18.1.2")},                // one changed, one as it was
		[]netip.Prefix{netip.MustParsePrefix("10.10.0.7/32"), netip.MustParsePrefix("10.99.0.0/24")}, // one ours, one unknown
	); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 3*time.Second, "background pass wrote the change", testutil.Holds(func() bool {
		return strings.Contains(kernelRoutes(t, ns, "202")["10.10.0.5"], "via 198.18.1.3")
	}))
	testutil.Eventually(t, 3*time.Second, "deleted route gone", testutil.Holds(func() bool {
		_, ok := kernelRoutes(t, ns, "202")["10.10.0.7"]
		return !ok
	}))
	after := tbl.Stats()
	if after.Replaced-before.Replaced != 1 || after.Removed-before.Removed != 1 || after.Added != before.Added {
		t.Fatalf("stats before %+v, after %+v: want exactly one replace and one delete", before, after)
	}
	if after.Desired != 1999 {
		t.Fatalf("desired %d routes, want 1999", after.Desired)
	}
	if err := tbl.UpdateRoutes([]Route{via("10.10.0.8/32", "fd00::1")}, nil); err == nil {
		t.Fatal("UpdateRoutes accepted an IPv4 route with an IPv6 next hop")
	}
}

// A table above 255 is named by RTA_TABLE: written there, read back from
// there, and its events recognized (a hand-deleted route is restored).
func TestTableAbove255(t *testing.T) {
	ns := newTestNS(t, "t1000")
	ns.MustRun(t, "ip", "addr", "add", "198.18.1.1/24", "dev", "cxa0")
	tbl := newTestTable(t, ns, Options{Protocol: ProtoBGP, TableID: 1000, ResyncInterval: time.Hour})
	runTable(t, tbl)
	mustSet(t, tbl, via("10.60.0.0/24", "198.18.1.2"), blackhole("10.61.0.0/24"))
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	show := func() string { return ns.MustRun(t, "ip", "route", "show", "table", "1000", "proto", "202") }
	if out := show(); !strings.Contains(out, "10.60.0.0/24 via 198.18.1.2") || !strings.Contains(out, "blackhole 10.61.0.0/24") {
		t.Fatalf("table 1000 holds %q", out)
	}
	if got := kernelRoutes(t, ns, "202"); len(got) != 0 {
		t.Fatalf("routes leaked into main: %v", got)
	}
	writes := tbl.Stats().Writes()
	if err := tbl.Apply(context.Background()); err != nil || tbl.Stats().Writes() != writes {
		t.Fatalf("second Apply wrote (err %v, stats %+v)", err, tbl.Stats())
	}
	ns.MustRun(t, "ip", "route", "del", "10.60.0.0/24", "table", "1000", "proto", "202")
	testutil.Eventually(t, 3*time.Second, "hand-deleted route in table 1000 restored", testutil.Holds(func() bool {
		return strings.Contains(show(), "10.60.0.0/24 via 198.18.1.2")
	}))
}
