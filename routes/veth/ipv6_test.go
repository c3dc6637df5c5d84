package veth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/netlab"
	"github.com/calyx-net/calyx/internal/netnstest"
)

// An IPv4-only workload on an IPv4-only node has no IPv6 at all, so it can
// neither talk to its host over link-local IPv6 nor send it router
// advertisements; and should a privileged workload turn IPv6 back on, the
// host still takes no router advertisement from it (accept_ra=0).
func TestIPv4OnlyWorkloadCannotUseIPv6AgainstHost(t *testing.T) {
	l := newLabFamilies(t, false)
	w, spec := l.addWorkload(t, "v4only", "10.244.0.7/32")
	ping(t, w, "198.18.0.1") // IPv4 works

	if got := w.MustRun(t, "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"); got != "1" {
		t.Errorf("workload eth0 disable_ipv6 = %s, want 1", got)
	}
	if got := l.host.MustRun(t, "cat", "/proc/sys/net/ipv6/conf/"+spec.HostIfName+"/accept_ra"); got != "0" {
		t.Errorf("host %s accept_ra = %s, want 0", spec.HostIfName, got)
	}
	hostLL := linkLocal(t, l.host, spec.HostIfName)
	// (Tried for 3 s: with IPv6 on, the workload's own link-local would
	// finish duplicate address detection in about a second.)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if out, err := w.Run("ping", "-6", "-c1", "-W1", hostLL+"%eth0"); err == nil {
			t.Errorf("the IPv4-only workload reached its host's link-local %s over IPv6: %s", hostLL, out)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := l.plumber.Check(context.Background(), spec); err != nil {
		t.Errorf("Check: %v", err)
	}

	// A workload with the privilege to turn IPv6 on again in its own
	// namespace sends a router advertisement: the host ignores it.
	w.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
	waitUsableLinkLocal(t, w, "eth0")
	if err := netlab.SendRouterAdvertisement(w.Name, "eth0"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if out := l.host.MustRun(t, "ip", "-6", "route", "show", "default"); strings.Contains(out, spec.HostIfName) {
		t.Fatalf("the host took a default route from the workload's router advertisement: %q", out)
	}
}

// On a dual-stack node the host end takes no router advertisement either.
func TestDualStackHostSideTakesNoRA(t *testing.T) {
	l := newLab(t)
	w, spec := l.addWorkload(t, "dual", "10.244.0.8/32", "fd00:244::8/128")
	if got := l.host.MustRun(t, "cat", "/proc/sys/net/ipv6/conf/"+spec.HostIfName+"/accept_ra"); got != "0" {
		t.Errorf("host %s accept_ra = %s, want 0", spec.HostIfName, got)
	}
	ping(t, w, "fd00:18::1") // IPv6 works
}

func linkLocal(t *testing.T, ns netnstest.NS, ifname string) string {
	t.Helper()
	out := ns.MustRun(t, "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link")
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "fe80:") {
			return strings.Split(f, "/")[0]
		}
	}
	t.Fatalf("%s has no link-local address: %q", ifname, out)
	return ""
}

func waitUsableLinkLocal(t *testing.T, ns netnstest.NS, ifname string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := ns.Run("ip", "-6", "addr", "show", "dev", ifname, "scope", "link")
		if strings.Contains(out, "fe80:") && !strings.Contains(out, "tentative") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no usable link-local address: %s", ifname, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
