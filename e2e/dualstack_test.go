package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestDualStack shares one dual-stack lab among the subtests: 3 hosts with
// IPv4 and IPv6 fabric addresses, agents with --node-ipv6, an IPv4 and an
// IPv6 pool, a BIRD ToR with an IPv4 and an IPv6 session to every host, one
// workload per host, and the agents' IPAM GC every second (so that an
// empty block is released within seconds). The release runs last: it takes
// host3's only workload away.
func TestDualStack(t *testing.T) {
	l := upLab(t, lab.Options{
		Hosts: 3, Workloads: 1, Peer: lab.PeerBird, IPv6: true,
		AgentArgs: []string{"--ipam-gc-interval=1s", "--ipam-gc-grace=3s"},
	})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("OneAddressPerFamily", func(t *testing.T) { testOneAddressPerFamily(t, l) })
	t.Run("IPv6PingMatrix", func(t *testing.T) { testIPv6PingMatrix(ctx, t, l) })
	t.Run("IPv6RoutesInEveryKernel", func(t *testing.T) { testIPv6Routes(ctx, t, l) })
	t.Run("BirdLearnsIPv6Blocks", func(t *testing.T) { testBirdIPv6(ctx, t, l) })
	t.Run("PolicyRestrictsTCPOverIPv6", func(t *testing.T) { testPolicyIPv6(ctx, t, l) })
	t.Run("ReleasedIPv6BlockWithdrawn", func(t *testing.T) { testReleasedIPv6Block(ctx, t, l) })
}

// testOneAddressPerFamily: every workload got exactly one IPv4 address from
// the IPv4 pool and one IPv6 address from the IPv6 pool, and inside its
// namespace the IPv6 one is a /128 with the default route via fe80::1.
func testOneAddressPerFamily(t *testing.T, l *lab.Lab) {
	pool4 := netip.MustParsePrefix(l.Options().Pool)
	pool6 := netip.MustParsePrefix(l.Options().Pool6)
	for _, w := range l.Workloads() {
		var v4, v6 []netip.Addr
		for _, s := range w.IPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				t.Fatalf("%s: address %q: %v", w.Name, s, err)
			}
			if a.Is4() {
				v4 = append(v4, a)
			} else {
				v6 = append(v6, a)
			}
		}
		if len(v4) != 1 || len(v6) != 1 || !pool4.Contains(v4[0]) || !pool6.Contains(v6[0]) {
			t.Errorf("%s has %v, want one address of %s and one of %s", w.Name, w.IPs, pool4, pool6)
			continue
		}
		addrs, err := l.Exec(w.Name, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(addrs, " "+v6[0].String()+"/128 ") {
			t.Errorf("%s: eth0 lacks %s/128:\n%s", w.Name, v6[0], addrs)
		}
		def, err := l.Exec(w.Name, "ip", "-6", "route", "show", "default")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(def, "via fe80::1 dev eth0") {
			t.Errorf("%s: IPv6 default route is %q, want via fe80::1 dev eth0", w.Name, def)
		}
	}
}

// testIPv6PingMatrix: every host and workload answers ICMPv6 from every
// other one, across hosts and on the same host.
func testIPv6PingMatrix(ctx context.Context, t *testing.T, l *lab.Lab) {
	eps := l.Endpoints6(true)
	if len(eps) != 6 {
		t.Fatalf("IPv6 endpoints %v: want 3 hosts and 3 workloads", eps)
	}
	// Neighbour discovery on a fresh veth can lose a first echo: retry
	// the whole matrix for a few seconds before calling it broken.
	var m lab.Matrix
	testutil.Eventually(t, 10*time.Second, "complete IPv6 ping matrix", func() error {
		m = l.PingMatrix(ctx, eps, eps, 8)
		if f := m.Failed(); len(f) > 0 {
			return fmt.Errorf("%d pairs failed:\n%s", len(f), m)
		}
		return nil
	})
	t.Logf("IPv6 ping matrix:\n%s", m)
}

// testIPv6Routes: each host's kernel routes every other host's IPv6 block
// over BGP (protocol 202) via that host's IPv6 address, and the ToR's IPv6
// prefix via the ToR's IPv6 address; its own block is a blackhole of the
// agent's (protocol 201).
func testIPv6Routes(ctx context.Context, t *testing.T, l *lab.Lab) {
	kernels := hostRoutes(t, l)
	owners := v6BlockOwners(ctx, t, l)
	tor := netip.MustParsePrefix(lab.TorStaticRoute6)
	for _, h := range l.Hosts() {
		k := kernels[h.Name]
		for blk, owner := range owners {
			if owner.Name == h.Name {
				testutil.Eventually(t, 10*time.Second, h.Name+" blackholes its own block "+blk.String(), func() error { return k.expectOwnBlackhole6(blk) })
				continue
			}
			testutil.Eventually(t, 10*time.Second, h.Name+" routes "+blk.String()+" via "+owner.IPv6, func() error { return k.expectVia6(blk, owner.IPv6) })
		}
		testutil.Eventually(t, 10*time.Second, h.Name+" routes the ToR's "+tor.String(), func() error { return k.expectVia6(tor, lab.TorIPv6) })
	}
}

// testBirdIPv6: the ToR learns each IPv6 block from its owner over the IPv6
// session, programs it, and so reaches every workload over IPv6.
func testBirdIPv6(ctx context.Context, t *testing.T, l *lab.Lab) {
	for blk, owner := range v6BlockOwners(ctx, t, l) {
		testutil.Eventually(t, 10*time.Second, "BIRD routes "+blk.String()+" via "+owner.Name, func() error { return torRouteVia(ctx, l, blk, owner.IPv6) })
	}
	for _, w := range l.Workloads() {
		testutil.Eventually(t, 10*time.Second, "the ToR pings "+w.Name+" over IPv6", func() error { return l.Ping("tor", w.IPv6()) })
	}
}

// v6BlockOwners maps the IPv6 block of each initial workload to its host.
func v6BlockOwners(ctx context.Context, t *testing.T, l *lab.Lab) map[netip.Prefix]lab.Host {
	t.Helper()
	out := map[netip.Prefix]lab.Host{}
	for _, h := range l.Hosts() {
		w, err := l.Workload(fmt.Sprintf("h%d-w1", h.Index))
		if err != nil {
			t.Fatal(err)
		}
		b := blockOf(ctx, t, l, w.IPv6())
		if b.Node != h.Name || b.CIDR.Bits() != 122 {
			t.Fatalf("the block of %s (%s) is %s of %q, want a /122 of %s", w.Name, w.IPv6(), b.CIDR, b.Node, h.Name)
		}
		out[b.CIDR] = h
	}
	return out
}

// testPolicyIPv6: the policy of TestPolicyAllowsOnlyTheSelectedClient,
// checked over IPv6 (and, to show that one policy covers both families,
// over IPv4 for the allowed and one refused client).
func testPolicyIPv6(ctx context.Context, t *testing.T, l *lab.Lab) {
	add := func(name, host string, labels map[string]string) lab.Workload {
		w, err := l.AddWorkload(ctx, name, host, labels)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.DelWorkload(context.Background(), name) })
		return w
	}
	server := add("web6", "host2", map[string]string{"app": "web"})
	add("front6", "host1", map[string]string{"role": "frontend"})
	add("other6", "host1", map[string]string{"role": "other"})
	add("neigh6", "host2", map[string]string{"role": "other"})

	// ":8080" listens on both families.
	ln, err := l.Listen("web6", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lab.DiscardConns(ln)
	target6 := net.JoinHostPort(server.IPv6(), "8080")
	target4 := net.JoinHostPort(server.IPv4(), "8080")
	connect := func(from, target string) error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := l.Dial(cctx, from, target)
		if err != nil {
			return err
		}
		return c.Close()
	}
	blocked := func(from, target string) func() error {
		return func() error {
			if connect(from, target) == nil {
				return fmt.Errorf("%s still connects to %s", from, target)
			}
			return nil
		}
	}

	for _, c := range []string{"front6", "other6", "neigh6"} {
		testutil.Eventually(t, 10*time.Second, c+" connects over IPv6 before any policy", func() error { return connect(c, target6) })
	}
	if err := l.Apply(ctx, []byte(allowFrontendPolicy)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ds, err := l.Datastore()
		if err == nil {
			err = ds.Delete(context.Background(), datastore.KindPolicy, "web-from-frontend")
		}
		if err != nil && !errors.Is(err, datastore.ErrNotFound) {
			t.Errorf("removing the policy: %v", err)
		}
	}()
	testutil.Eventually(t, 20*time.Second, "other6 is refused over IPv6 by the policy", blocked("other6", target6))
	testutil.Eventually(t, 5*time.Second, "neigh6 (same host) is refused over IPv6 by the policy", blocked("neigh6", target6))
	testutil.Eventually(t, 5*time.Second, "other6 is refused over IPv4 by the policy", blocked("other6", target4))
	if err := connect("front6", target6); err != nil {
		t.Errorf("front6 is allowed by the policy but over IPv6: %v", err)
	}
	if err := connect("front6", target4); err != nil {
		t.Errorf("front6 is allowed by the policy but over IPv4: %v", err)
	}
	if err := l.Ping("front6", server.IPv6()); err == nil {
		t.Error("ICMPv6 echo is not allowed by the policy, yet ping -6 answers")
	}

	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Delete(ctx, datastore.KindPolicy, "web-from-frontend"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "other6 connects over IPv6 once the policy is gone", func() error {
		if err := connect("other6", target6); err != nil {
			return errors.Join(errors.New("still refused"), err)
		}
		return nil
	})
}

// testReleasedIPv6Block: once host3's only workload is deleted, the agent's
// IPAM GC releases its IPv6 block after the grace period, and the block
// leaves every kernel (the owner's blackhole too) and BIRD.
func testReleasedIPv6Block(ctx context.Context, t *testing.T, l *lab.Lab) {
	h3, err := l.Host("host3")
	if err != nil {
		t.Fatal(err)
	}
	w, err := l.Workload("h3-w1")
	if err != nil {
		t.Fatal(err)
	}
	blk := blockOf(ctx, t, l, w.IPv6())
	if blk.Node != h3.Name || blk.Used != 1 {
		t.Fatalf("block %s: node %q with %d addresses used, want host3's with only %s", blk.CIDR, blk.Node, blk.Used, w.Name)
	}
	kernels := hostRoutes(t, l)
	testutil.Eventually(t, 10*time.Second, "BIRD routes "+blk.CIDR.String()+" via host3", func() error { return torRouteVia(ctx, l, blk.CIDR, h3.IPv6) })

	start := time.Now()
	if err := l.DelWorkload(ctx, w.Name); err != nil {
		t.Fatal(err)
	}
	gone, err := timeUntil(start, 25*time.Second, kernels, func(k *nsRoutes) error { return k.expectNone6(blk.CIDR) })
	t.Logf("%s deleted: IPv6 block %s gone from the kernels after %s", w.Name, blk.CIDR, fmtTimes(gone))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "BIRD forgets the block", func() error { return torRouteVia(ctx, l, blk.CIDR, "") })
	for _, b := range blocks(ctx, t, l) {
		if b.CIDR == blk.CIDR {
			t.Errorf("block %s is withdrawn but still in the IPAM, held by %q (%d used)", b.CIDR, b.Node, b.Used)
		}
	}
}

// get6 returns the main-table IPv6 route to exactly dst, or nil (nsRoutes.get
// reads the IPv4 table only).
func (r *nsRoutes) get6(dst netip.Prefix) (*netlink.Route, error) {
	filter := &netlink.Route{Dst: ipNet(dst), Table: unix.RT_TABLE_MAIN}
	for try := 0; ; try++ {
		rs, err := r.h.RouteListFiltered(unix.AF_INET6, filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < 3 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("IPv6 routes of %s: %w", r.target, err)
		}
		for i := range rs {
			if rs[i].Dst != nil && prefixOf(rs[i].Dst) == dst {
				return &rs[i], nil
			}
		}
		return nil, nil
	}
}

// expectVia6 fails unless the namespace has an IPv6 route to dst learned
// over BGP (protocol 202) with gw among its next hops.
func (r *nsRoutes) expectVia6(dst netip.Prefix, gw string) error {
	rt, err := r.get6(dst)
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

// expectOwnBlackhole6 fails unless dst is a blackhole of the agent's.
func (r *nsRoutes) expectOwnBlackhole6(dst netip.Prefix) error {
	rt, err := r.get6(dst)
	if err != nil {
		return err
	}
	if rt == nil || rt.Type != unix.RTN_BLACKHOLE || int(rt.Protocol) != protoWorkload {
		got := "none"
		if rt != nil {
			got = describeRoute(rt)
		}
		return fmt.Errorf("%s: route to %s is %s, want a blackhole proto %d", r.target, dst, got, protoWorkload)
	}
	return nil
}

// expectNone6 fails if the namespace has any IPv6 route to exactly dst.
func (r *nsRoutes) expectNone6(dst netip.Prefix) error {
	rt, err := r.get6(dst)
	if err != nil {
		return err
	}
	if rt != nil {
		return fmt.Errorf("%s still has %s", r.target, describeRoute(rt))
	}
	return nil
}
