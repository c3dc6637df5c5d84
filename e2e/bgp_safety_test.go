package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// A second ToR (a BIRD of the test's own) on the fabric, peering with
// host1 (BFD, a BGPFilter) and host2 (a prefix limit).
const (
	tor2IP = "198.18.0.242"
	tor2AS = 65002
	// tor2Route is an ordinary prefix the hosts may learn.
	tor2Route = "198.51.100.0/24"
	// tor2Filtered is refused by host1's BGPFilter.
	tor2Filtered = "198.51.101.0/24"
)

// tor2Config: BIRD announcing, besides the two ordinary prefixes, a
// more-specific of another node's block and the pool itself, with BFD
// (300 ms x 3) and graceful restart on its session to host1.
func tor2Config(moreSpecific, pool string) string {
	return fmt.Sprintf(`router id %[1]s;
log stderr all;
protocol device { scan time 10; }
protocol static {
	ipv4;
	route %[3]s blackhole;
	route %[4]s blackhole;
	route %[5]s blackhole;
	route %[6]s blackhole;
}
protocol bfd { interface "eth0" { interval 300 ms; multiplier 3; }; }
template bgp calyxhost {
	local %[1]s as %[2]d;
	connect delay time 1; connect retry time 2; error wait time 1, 10;
	ipv4 { import all; export all; };
}
protocol bgp host1 from calyxhost { neighbor %[7]s as %[8]d; bfd on; graceful restart on; }
protocol bgp host2 from calyxhost { neighbor %[9]s as %[8]d; }
`, tor2IP, tor2AS, tor2Route, tor2Filtered, moreSpecific, pool, lab.HostIP(1), lab.NodeAS, lab.HostIP(2))
}

func tor2Resources(maxPrefixes int, heldBack netip.Prefix) string {
	return fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: BGPFilter
metadata: {name: tor2}
spec:
  importV4:
  - {action: Reject, matchOperator: Equal, cidr: %[1]s}
  exportV4:
  - {action: Reject, matchOperator: Equal, cidr: %[2]s}
---
apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: tor2-host1}
spec: {peerIP: %[3]s, asNumber: %[4]d, node: host1, filters: [tor2], bfd: {enabled: true, intervalMs: 300, multiplier: 3}}
---
apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: tor2-host2}
spec: {peerIP: %[3]s, asNumber: %[4]d, node: host2, maxPrefixes: %[5]d}
`, tor2Filtered, heldBack, tor2IP, tor2AS, maxPrefixes)
}

// TestBGPSafetyFiltersLimitsBFDServices runs GoBGP v4 in the agents
// against BIRD: what an external peer may put in the kernel, a BGPFilter
// both ways, a prefix limit, BFD failover, and service ranges announced
// by every node.
func TestBGPSafetyFiltersLimitsBFDServices(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 2, Peer: lab.PeerBird})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w1, err := l.AddWorkload(ctx, "h1-a", "host1", map[string]string{"app": "a"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := l.AddWorkload(ctx, "h2-a", "host2", map[string]string{"app": "a"})
	if err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, l)
	blk1, blk2 := blockOf(ctx, t, l, w1.IP()), blockOf(ctx, t, l, w2.IP())
	pool := netip.MustParsePrefix(l.Options().Pool)
	moreSpecific := netip.PrefixFrom(blk2.CIDR.Addr(), blk2.CIDR.Bits()+2)
	bird := startExtraBird(t, l, tor2IP, tor2Config(moreSpecific.String(), pool.String()))
	if err := l.Apply(ctx, []byte(tor2Resources(2, blk2.CIDR))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removePeers(t, l, []string{"tor2-host1", "tor2-host2"}, tor2IP) })
	k1 := openRoutes(t, l, "host1")

	t.Run("ImportSafety", func(t *testing.T) {
		testutil.Eventually(t, 30*time.Second, "host1's session to the second ToR", func() error { return sessionUp(ctx, l, bird, "host1") })
		testutil.Eventually(t, 10*time.Second, "host1 installs "+tor2Route, func() error {
			return k1.expectVia(netip.MustParsePrefix(tor2Route), tor2IP)
		})
		// Only the unrelated prefix: not the more-specific of host2's
		// block, not the pool, and host2's block still goes to host2.
		for _, p := range []netip.Prefix{moreSpecific, pool} {
			if err := k1.expectNone(p); err != nil {
				t.Errorf("a ToR's %s reached host1's kernel: %v", p, err)
			}
		}
		if err := k1.expectVia(blk2.CIDR, lab.HostIP(2)); err != nil {
			t.Error(err)
		}
		st, err := peerOf(ctx, l, "host1", tor2IP)
		if err != nil || st == nil {
			t.Fatalf("host1's status of %s: %v, %v", tor2IP, st, err)
		}
		t.Logf("host1 from the second ToR: %d received (the 2 inside the pool refused on import)", st.GetPrefixesReceived())
	})

	t.Run("BGPFilterBothWays", func(t *testing.T) {
		if err := k1.expectNone(netip.MustParsePrefix(tor2Filtered)); err != nil {
			t.Errorf("the import filter let %s in: %v", tor2Filtered, err)
		}
		// Export: host2's block, which host1 would pass on, is held back
		// from this ToR; host1's own block goes out.
		testutil.Eventually(t, 10*time.Second, "the second ToR has host1's block but not host2's from host1", func() error {
			out, err := bird.birdc(ctx, "show", "route", "protocol", "host1")
			if err != nil {
				return err
			}
			if hops := birdVia(out, blk1.CIDR); len(hops) == 0 {
				return fmt.Errorf("BIRD has not learned %s from host1:\n%s", blk1.CIDR, out)
			}
			if hops := birdVia(out, blk2.CIDR); len(hops) > 0 {
				return fmt.Errorf("BIRD learned %s from host1 via %v", blk2.CIDR, hops)
			}
			return nil
		})
		// Control: the lab ToR (no filter) has host2's block from host1.
		testutil.Eventually(t, 10*time.Second, "the lab ToR has host2's block from host1", func() error {
			return torRouteVia(ctx, l, blk2.CIDR, lab.HostIP(1))
		})
	})

	t.Run("MaxPrefixes", func(t *testing.T) {
		// The second ToR sends host2 4 prefixes, 2 more than its limit:
		// the session goes down and says why.
		testutil.Eventually(t, 30*time.Second, "host2 reports the prefix limit", func() error {
			p, err := peerOf(ctx, l, "host2", tor2IP)
			if err != nil || p == nil {
				return fmt.Errorf("status: %v, %v", p, err)
			}
			if !strings.Contains(p.GetLastError(), "maximum prefixes (2) exceeded") {
				return fmt.Errorf("state %s, last error %q", p.GetState(), p.GetLastError())
			}
			return nil
		})
		out, _, _ := calyxctl(ctx, t, l, "host2", "node", "status")
		t.Logf("calyxctl node status on host2:\n%s", out)
		if !strings.Contains(out, "maximum prefixes (2) exceeded") {
			t.Errorf("node status does not say the limit was exceeded")
		}
		if err := l.Apply(ctx, []byte(tor2Resources(100, blk2.CIDR))); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, "host2's session once the limit is raised", func() error { return sessionUp(ctx, l, bird, "host2") })
	})

	t.Run("ServicesFromEveryNode", func(t *testing.T) {
		cfg := fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: BGPConfig
metadata: {name: default}
spec:
  asNumber: %d
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceLoadBalancerIPs: [{cidr: 198.19.200.0/24}]
  communities: ["%d:100"]
`, lab.NodeAS, lab.NodeAS)
		if err := l.Apply(ctx, []byte(cfg)); err != nil {
			t.Fatal(err)
		}
		for _, svc := range []string{"10.96.0.0/12", "198.19.200.0/24"} {
			p := netip.MustParsePrefix(svc)
			testutil.Eventually(t, 20*time.Second, "the ToR has "+svc+" from every node", func() error {
				for i := 1; i <= 2; i++ {
					if err := torRouteVia(ctx, l, p, lab.HostIP(i)); err != nil {
						return err
					}
				}
				return nil
			})
		}
		out, err := l.Birdc(ctx, "show", "route", "10.96.0.0/12", "all")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("(%d,100)", lab.NodeAS); !strings.Contains(out, want) {
			t.Errorf("the ToR's route carries no community %s:\n%s", want, out)
		}
	})

	t.Run("BFDFailover", func(t *testing.T) {
		testutil.Eventually(t, 30*time.Second, "BFD up on host1's session to the second ToR", func() error {
			p, err := peerOf(ctx, l, "host1", tor2IP)
			if err != nil || p == nil {
				return fmt.Errorf("status: %v, %v", p, err)
			}
			if p.GetBfdState() != "up" {
				return fmt.Errorf("BFD %q", p.GetBfdState())
			}
			return nil
		})
		out, _, _ := calyxctl(ctx, t, l, "host1", "node", "status")
		t.Logf("calyxctl node status on host1:\n%s", out)
		route := netip.MustParsePrefix(tor2Route)
		if err := k1.expectVia(route, tor2IP); err != nil {
			t.Fatal(err)
		}
		fabric, err := l.Namespace("fabric")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if out, err := exec.CommandContext(ctx, "ip", "-n", fabric, "link", "set", bird.Port, "down").CombinedOutput(); err != nil {
			t.Fatalf("cutting the second ToR's link: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "-n", fabric, "link", "set", bird.Port, "up").Run() })
		var gone time.Duration
		testutil.Eventually(t, 10*time.Second, tor2Route+" leaves host1's kernel", func() error {
			if err := k1.expectNone(route); err != nil {
				return err
			}
			gone = time.Since(start)
			return nil
		})
		t.Logf("BFD 300 ms x 3: the second ToR's route left host1's kernel %s after its link was cut (hold timer 90 s, and graceful restart would keep it longer)", gone.Round(time.Millisecond))
		if gone > 3*time.Second {
			t.Errorf("failover took %s; BFD should take about 0.9 s", gone)
		}
	})

	t.Run("MeshPasswordAndBFD", func(t *testing.T) {
		cfg := fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: BGPConfig
metadata: {name: default}
spec:
  asNumber: %d
  nodeToNodePassword: mesh-s3cret
  bfd: {enabled: true, intervalMs: 300, multiplier: 3}
`, lab.NodeAS)
		if err := l.Apply(ctx, []byte(cfg)); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 45*time.Second, "the mesh session with TCP MD5 and BFD up", func() error {
			for _, h := range []struct{ host, peer string }{{"host1", lab.HostIP(2)}, {"host2", lab.HostIP(1)}} {
				p, err := peerOf(ctx, l, h.host, h.peer)
				if err != nil || p == nil {
					return fmt.Errorf("%s: status: %v, %v", h.host, p, err)
				}
				if p.GetState().String() != "BGP_SESSION_STATE_ESTABLISHED" || p.GetBfdState() != "up" {
					return fmt.Errorf("%s's session to %s: %s, BFD %q", h.host, h.peer, p.GetState(), p.GetBfdState())
				}
			}
			return nil
		})
		testutil.Eventually(t, 10*time.Second, "host1 routes host2's block again", func() error { return k1.expectVia(blk2.CIDR, lab.HostIP(2)) })
	})
}
