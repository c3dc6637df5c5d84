package routes

import (
	"context"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/netnstest"
	"github.com/calyx-net/calyx/internal/testutil"
)

func readSysctl(t testing.TB, ns netnstest.NS, key string) string {
	t.Helper()
	return ns.MustRun(t, "cat", "/proc/sys/"+key)
}

func TestSysctlsAssertAndRestore(t *testing.T) {
	ns := netnstest.New(t, "sysctl")
	ns.MustRun(t, "ip", "link", "add", "cxs0", "type", "veth", "peer", "name", "other0")
	s := NewSysctls(SysctlOptions{NetNSPath: ns.Path, IPv6: true, ResyncInterval: 200 * time.Millisecond})
	if err := s.Apply(context.Background()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/ipv6/conf/all/forwarding":        "1",
		"net/ipv4/conf/cxs0/proxy_arp":        "1",
		"net/ipv4/neigh/cxs0/proxy_delay":     "0",
		"net/ipv4/conf/cxs0/rp_filter":        "1",
		"net/ipv6/conf/cxs0/proxy_ndp":        "1",
		"net/ipv6/conf/cxs0/forwarding":       "1",
		"net/ipv6/conf/cxs0/accept_ra":        "0",
		"net/ipv4/conf/other0/proxy_arp":      "0", // not ours
		"net/ipv4/neigh/other0/proxy_delay":   "80",
		"net/ipv6/conf/default/proxy_ndp":     "0",
		"net/ipv4/conf/all/proxy_arp":         "0",
		"net/ipv4/conf/default/rp_filter":     "0",
		"net/ipv4/conf/lo/proxy_arp":          "0",
		"net/ipv6/conf/lo/proxy_ndp":          "0",
		"net/ipv4/conf/cxs0/accept_redirects": "1", // untouched default
	}
	for k, v := range want {
		if got := readSysctl(t, ns, k); got != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
	// all/forwarding=1 also sets cxs0's forwarding, so 7 writes, not 8.
	if n := s.Stats().Changed; n != 7 {
		t.Errorf("Changed = %d, want 7", n)
	}
	if err := s.Apply(context.Background()); err != nil || s.Stats().Changed != 7 {
		t.Errorf("second Apply rewrote settings (err %v, stats %+v)", err, s.Stats())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	ns.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.cxs0.proxy_arp=0", "net.ipv4.neigh.cxs0.proxy_delay=80", "net.ipv4.ip_forward=0")
	took := testutil.Eventually(t, 5*time.Second, "hand-reverted sysctls restored", testutil.Holds(func() bool {
		return readSysctl(t, ns, "net/ipv4/conf/cxs0/proxy_arp") == "1" &&
			readSysctl(t, ns, "net/ipv4/neigh/cxs0/proxy_delay") == "0" &&
			readSysctl(t, ns, "net/ipv4/ip_forward") == "1"
	}))
	t.Logf("restored in %v", took)

	// A new workload interface is set up from its link event.
	ns.MustRun(t, "ip", "link", "add", "cxs1", "type", "veth", "peer", "name", "other1")
	testutil.Eventually(t, 5*time.Second, "new interface configured", testutil.Holds(func() bool {
		return readSysctl(t, ns, "net/ipv4/conf/cxs1/proxy_arp") == "1"
	}))
	if got := readSysctl(t, ns, "net/ipv4/conf/other1/proxy_arp"); got != "0" {
		t.Errorf("other1 proxy_arp = %s: a non-cx interface was touched", got)
	}
}
