package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestBGPWithdrawalsAndPeers shares one lab among the subtests: 3 hosts, a
// BIRD ToR, /30 blocks with one block per host (so that a host soon has to
// borrow), and the agents' IPAM GC every second (so that an empty block is
// released within seconds). Each subtest leaves the BGP sessions as it
// found them.
func TestBGPWithdrawalsAndPeers(t *testing.T) {
	l := upLab(t, lab.Options{
		Hosts: 3, Peer: lab.PeerBird,
		AgentArgs: []string{"--ipam-gc-interval=1s", "--ipam-gc-grace=3s"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	small := fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: lab-pool}
spec: {cidr: %s, blockSize: 30}
---
apiVersion: calyx.dev/v1
kind: IPAMConfig
metadata: {name: default}
spec: {maxBlocksPerHost: 1}
`, l.Options().Pool)
	if err := l.Apply(ctx, []byte(small)); err != nil {
		t.Fatalf("applying /30 blocks and maxBlocksPerHost 1: %v", err)
	}
	for _, h := range l.Hosts() {
		if _, err := l.AddWorkload(ctx, fmt.Sprintf("h%d-a", h.Index), h.Name, map[string]string{"app": "a"}); err != nil {
			t.Fatal(err)
		}
	}
	waitEstablished(t, l)

	t.Run("ToRWithdrawalLeavesEveryKernelWithinASecond", func(t *testing.T) { testTorWithdrawal(ctx, t, l) })
	t.Run("MD5Password", func(t *testing.T) { testMD5Password(ctx, t, l) })
	t.Run("InvalidPeerRejected", func(t *testing.T) { testInvalidPeerRejected(ctx, t, l) })
	t.Run("UnreachablePeer", func(t *testing.T) { testUnreachablePeer(ctx, t, l) })
	var lender string
	t.Run("BorrowedAddressWithdrawn", func(t *testing.T) { lender = testBorrowedAddress(ctx, t, l) })
	t.Run("ReleasedBlockWithdrawn", func(t *testing.T) { testReleasedBlock(ctx, t, l, lender) })
}

// testTorWithdrawal: BIRD's static prefix is on every host; when BIRD
// withdraws it, it leaves every host's kernel within a second, and comes
// back when BIRD announces it again.
func testTorWithdrawal(ctx context.Context, t *testing.T, l *lab.Lab) {
	tor := netip.MustParsePrefix(lab.TorStaticRoute)
	kernels := hostRoutes(t, l)
	for name, k := range kernels {
		testutil.Eventually(t, 15*time.Second, name+" installs "+tor.String(), func() error { return k.expectVia(tor, lab.TorIP) })
	}
	static := birdStaticProtocol(ctx, t, l)
	t.Cleanup(func() { _, _ = l.Birdc(context.Background(), "enable", static) })

	start := time.Now()
	if _, err := l.Birdc(ctx, "disable", static); err != nil {
		t.Fatal(err)
	}
	gone, err := timeUntil(start, 5*time.Second, kernels, func(k *nsRoutes) error { return k.expectNone(tor) })
	t.Logf("BIRD withdrew %s: gone from the kernels after %s", tor, fmtTimes(gone))
	if err != nil {
		t.Fatal(err)
	}
	for host, d := range gone {
		if d >= time.Second {
			t.Errorf("%s: %s left the kernel %s after BIRD withdrew it, want < 1s", host, tor, d)
		}
	}

	start = time.Now()
	if _, err := l.Birdc(ctx, "enable", static); err != nil {
		t.Fatal(err)
	}
	back, err := timeUntil(start, 10*time.Second, kernels, func(k *nsRoutes) error { return k.expectVia(tor, lab.TorIP) })
	t.Logf("BIRD announced %s again: back in the kernels after %s", tor, fmtTimes(back))
	if err != nil {
		t.Fatal(err)
	}
}

// birdStaticProtocol is the name BIRD gave the ToR's unnamed static
// protocol (static1).
func birdStaticProtocol(ctx context.Context, t *testing.T, l *lab.Lab) string {
	t.Helper()
	out, err := l.Birdc(ctx, "show", "protocols")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "Static" {
			return f[0]
		}
	}
	t.Fatalf("the ToR has no static protocol:\n%s", out)
	return ""
}

// hostRoutes opens the route tables of every host, by host name.
func hostRoutes(t *testing.T, l *lab.Lab) map[string]*nsRoutes {
	out := map[string]*nsRoutes{}
	for _, h := range l.Hosts() {
		out[h.Name] = openRoutes(t, l, h.Name)
	}
	return out
}

// timeUntil polls cond on every target every 20 ms until it has held for
// each, and returns, per target, when it first held (after start).
func timeUntil(start time.Time, timeout time.Duration, targets map[string]*nsRoutes, cond func(*nsRoutes) error) (map[string]time.Duration, error) {
	took := map[string]time.Duration{}
	last := map[string]error{}
	deadline := start.Add(timeout)
	for {
		for name, k := range targets {
			if _, done := took[name]; done {
				continue
			}
			if err := cond(k); err != nil {
				last[name] = err
			} else {
				took[name] = time.Since(start)
			}
		}
		if len(took) == len(targets) {
			return took, nil
		}
		if time.Now().After(deadline) {
			var errs []string
			for name := range targets {
				if _, done := took[name]; !done {
					errs = append(errs, last[name].Error())
				}
			}
			sort.Strings(errs)
			return took, fmt.Errorf("not within %s: %s", timeout, strings.Join(errs, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fmtTimes(m map[string]time.Duration) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %s", n, m[n].Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

// testBorrowedAddress fills host1's only block, so that its next workload
// borrows an address from another host's block: that /32 is announced
// (every other kernel and BIRD route it via host1, the lender included,
// over its own blackhole) and withdrawn everywhere once the workload is
// deleted. It returns the lender's name.
func testBorrowedAddress(ctx context.Context, t *testing.T, l *lab.Lab) string {
	h1, err := l.Host("host1")
	if err != nil {
		t.Fatal(err)
	}
	first, err := l.Workload("h1-a")
	if err != nil {
		t.Fatal(err)
	}
	own := blockOf(ctx, t, l, first.IP())
	if own.Node != h1.Name {
		t.Fatalf("h1-a's block %s belongs to %q, want host1", own.CIDR, own.Node)
	}
	var borrower lab.Workload
	for i := 1; borrower.Name == "" && i <= own.Used+own.Free+1; i++ {
		w, err := l.AddWorkload(ctx, fmt.Sprintf("h1-fill%d", i), h1.Name, map[string]string{"app": "fill"})
		if err != nil {
			t.Fatal(err)
		}
		if b := blockOf(ctx, t, l, w.IP()); b.Node != h1.Name {
			borrower = w
		}
	}
	if borrower.Name == "" {
		t.Fatalf("host1 never borrowed: its block %s has %d addresses and maxBlocksPerHost is 1", own.CIDR, own.Used+own.Free)
	}
	lent := blockOf(ctx, t, l, borrower.IP())
	lender, err := l.Host(lent.Node)
	if err != nil {
		t.Fatalf("the block %s lent to host1 belongs to %q: %v", lent.CIDR, lent.Node, err)
	}
	x := netip.MustParsePrefix(borrower.IP() + "/32")
	t.Logf("%s on host1 borrowed %s from %s's block %s", borrower.Name, x.Addr(), lender.Name, lent.CIDR)

	kernels := hostRoutes(t, l)
	testutil.Eventually(t, 10*time.Second, "host1 routes "+x.String()+" to the workload", func() error {
		rt, err := kernels["host1"].get(x)
		if err != nil {
			return err
		}
		if rt == nil || int(rt.Protocol) != protoWorkload || len(gateways(rt)) > 0 {
			return fmt.Errorf("host1: route to %s is %v, want a device route proto %d", x, rt, protoWorkload)
		}
		return nil
	})
	for name, k := range kernels {
		if name == h1.Name {
			continue
		}
		testutil.Eventually(t, 15*time.Second, name+" learns "+x.String()+" via host1", func() error { return k.expectVia(x, h1.IP) })
	}
	testutil.Eventually(t, 15*time.Second, "BIRD learns "+x.String()+" via host1", func() error { return torRouteVia(ctx, l, x, h1.IP) })
	testutil.Eventually(t, 10*time.Second, lender.Name+" keeps the blackhole of its block", func() error {
		rt, err := kernels[lender.Name].get(lent.CIDR)
		if err != nil {
			return err
		}
		if rt == nil || int(rt.Protocol) != protoWorkload {
			return fmt.Errorf("%s: route to %s is %v, want its blackhole", lender.Name, lent.CIDR, rt)
		}
		return nil
	})
	lenderWorkload := fmt.Sprintf("h%d-a", lender.Index)
	for _, from := range []string{lenderWorkload, "tor"} {
		testutil.Eventually(t, 10*time.Second, from+" reaches the borrowed address", func() error { return l.Ping(from, borrower.IP()) })
	}

	start := time.Now()
	if err := l.DelWorkload(ctx, borrower.Name); err != nil {
		t.Fatal(err)
	}
	gone, err := timeUntil(start, 10*time.Second, kernels, func(k *nsRoutes) error { return k.expectNone(x) })
	t.Logf("%s deleted: %s gone from the kernels after %s", borrower.Name, x, fmtTimes(gone))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "BIRD forgets "+x.String(), func() error { return torRouteVia(ctx, l, x, "") })
	if b := blockOf(ctx, t, l, borrower.IP()); b.Borrowed != 0 {
		t.Errorf("the block %s still counts %d borrowed address(es) after the DEL", b.CIDR, b.Borrowed)
	}
	return lender.Name
}

// testReleasedBlock: once a host's block is empty, the agent's IPAM GC
// releases its affinity after the grace period, and the block's route
// leaves every kernel (the owner's blackhole too) and BIRD.
func testReleasedBlock(ctx context.Context, t *testing.T, l *lab.Lab, lender string) {
	// A host whose block lent nothing: its block empties with its one
	// workload.
	var target lab.Host
	for _, h := range l.Hosts() {
		if h.Name != "host1" && h.Name != lender {
			target = h
			break
		}
	}
	w, err := l.Workload(fmt.Sprintf("h%d-a", target.Index))
	if err != nil {
		t.Fatal(err)
	}
	blk := blockOf(ctx, t, l, w.IP())
	if blk.Node != target.Name || blk.Used != 1 {
		t.Fatalf("block %s: node %q with %d addresses used, want %s's with only %s", blk.CIDR, blk.Node, blk.Used, target.Name, w.Name)
	}
	kernels := hostRoutes(t, l)
	for name, k := range kernels {
		if name != target.Name {
			testutil.Eventually(t, 10*time.Second, name+" routes "+blk.CIDR.String()+" via "+target.Name, func() error { return k.expectVia(blk.CIDR, target.IP) })
		}
	}
	testutil.Eventually(t, 10*time.Second, "BIRD routes the block via "+target.Name, func() error { return torRouteVia(ctx, l, blk.CIDR, target.IP) })

	start := time.Now()
	if err := l.DelWorkload(ctx, w.Name); err != nil {
		t.Fatal(err)
	}
	// The grace period (3 s) runs from the block's last write, the DEL.
	gone, err := timeUntil(start, 25*time.Second, kernels, func(k *nsRoutes) error { return k.expectNone(blk.CIDR) })
	t.Logf("%s deleted: block %s gone from the kernels after %s", w.Name, blk.CIDR, fmtTimes(gone))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks(ctx, t, l) {
		if b.CIDR == blk.CIDR {
			t.Fatalf("block %s is withdrawn but still in the IPAM, held by %q (%d used)", b.CIDR, b.Node, b.Used)
		}
	}
	testutil.Eventually(t, 10*time.Second, "BIRD forgets the block", func() error { return torRouteVia(ctx, l, blk.CIDR, "") })
	// Only the blocks of host1 and the lender are left.
	for _, b := range blocks(ctx, t, l) {
		if !slices.Contains([]string{"host1", lender}, b.Node) {
			t.Errorf("unexpected block %s of %q after the release", b.CIDR, b.Node)
		}
	}
}
