package routes

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/netnstest"
	"github.com/calyx-net/calyx/internal/testutil"
)

// newTestNS creates a namespace with an up veth pair cxa0/cxa1 to hang
// device routes on.
func newTestNS(t testing.TB, tag string) netnstest.NS {
	t.Helper()
	ns := netnstest.New(t, tag)
	ns.MustRun(t, "ip", "link", "add", "cxa0", "type", "veth", "peer", "name", "cxa1")
	ns.MustRun(t, "ip", "link", "set", "cxa0", "up")
	ns.MustRun(t, "ip", "link", "set", "cxa1", "up")
	return ns
}

func newTestTable(t testing.TB, ns netnstest.NS, opts Options) *Table {
	t.Helper()
	if opts.Protocol == 0 {
		opts.Protocol = ProtoWorkload
	}
	opts.NetNSPath = ns.Path
	tbl, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(tbl.Close)
	return tbl
}

// runTable starts Run and waits until its subscriptions are live; the
// cleanup stops it and waits for it to return.
func runTable(t testing.TB, tbl *Table) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tbl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	testutil.Eventually(t, 5*time.Second, "route watch live", testutil.Holds(tbl.isWatching))
}

// kernelRoutes returns `ip route show proto N` for both families, as
// "dst -> rest of line" with iproute2's own formatting, so the assertions
// do not depend on this package's parsing.
func kernelRoutes(t testing.TB, ns netnstest.NS, proto string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, fam := range []string{"-4", "-6"} {
		text := ns.MustRun(t, "ip", "-o", fam, "route", "show", "table", "main", "proto", proto)
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(strings.ReplaceAll(line, "\\", " "))
			if line == "" {
				continue
			}
			f := strings.Fields(line)
			dst := f[0]
			if dst == "blackhole" || dst == "unicast" {
				dst = f[1]
			}
			out[dst] = strings.Join(strings.Fields(line), " ")
		}
	}
	return out
}

func keys(m map[string]string) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// wantRoutes fails unless the kernel's routes of proto are exactly the
// given destinations, each line containing the given fragment.
func wantRoutes(t testing.TB, ns netnstest.NS, proto string, want map[string]string) {
	t.Helper()
	got := kernelRoutes(t, ns, proto)
	if len(got) != len(want) {
		t.Fatalf("proto %s: kernel has %v, want %v", proto, keys(got), want)
	}
	for dst, frag := range want {
		line, ok := got[dst]
		if !ok {
			t.Fatalf("proto %s: route %s missing; kernel has %v", proto, dst, got)
		}
		if !strings.Contains(line, frag) {
			t.Fatalf("proto %s: route %q does not contain %q", proto, line, frag)
		}
	}
}

func dev(dst, link string) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Type: RouteDevice, LinkName: link}
}

func blackhole(dst string) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Type: RouteBlackhole}
}

func via(dst string, hops ...string) Route {
	r := Route{Dst: netip.MustParsePrefix(dst), Type: RouteGateway}
	for _, h := range hops {
		r.NextHops = append(r.NextHops, netip.MustParseAddr(h))
	}
	return r
}
