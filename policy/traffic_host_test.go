package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/netlab"
)

// webEgressDeny puts web under egress default-deny but for tcp/5432
// anywhere (a port the host does not serve).
func webEgressDeny() *datastore.Policy {
	return &datastore.Policy{
		Metadata: datastore.Metadata{Name: "web-egress"},
		Spec: datastore.PolicySpec{Selector: `app == "web"`, Types: []datastore.PolicyType{datastore.PolicyTypeEgress},
			Egress: []datastore.Rule{tcpRule(datastore.ActionAllow, 5432, "")}},
	}
}

// Workload-to-host traffic goes through the workload's egress policy and
// then the endpoint-to-host action, in both families; no failsafe port is
// open to a workload. Accept, Drop and Return, each with real connections.
func TestTrafficWorkloadToHostAction(t *testing.T) {
	for _, action := range []HostAction{HostActionAccept, HostActionDrop, HostActionReturn} {
		t.Run(string(action), func(t *testing.T) {
			tl := newTrafficLab(t, Config{IPv6: true, EndpointToHost: action})
			for _, to := range []netip.AddrPort{netip.AddrPortFrom(netlab.HostUplinkV4, 2379),
				netip.AddrPortFrom(netlab.HostUplinkV6, 22), netip.AddrPortFrom(netlab.HostUplinkV6, 2379), netip.AddrPortFrom(netlab.HostUplinkV6, 8080)} {
				if err := netlab.ServeTCP(tl.ctx, tl.host.NS, to); err != nil {
					t.Fatal(err)
				}
			}
			if action == HostActionReturn {
				// Return hands the packet back to the host's own INPUT
				// rules, which here close 8080.
				for _, bin := range []string{"iptables", "ip6tables"} {
					if _, err := netlab.Exec(tl.ctx, tl.host.NS, bin, "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "REJECT"); err != nil {
						t.Fatal(err)
					}
				}
			}
			tl.setPolicy(webEgressDeny())
			for _, host := range []netip.Addr{netlab.HostUplinkV4, netlab.HostUplinkV6} {
				for _, port := range []uint16{22, 2379, 8080} {
					to := netip.AddrPortFrom(host, port)
					// Under egress default-deny: nothing on the host,
					// failsafe ports included, whatever the action.
					tl.expectTCP(tl.wl["web"].NS, to, false)
					// No egress policy: the action decides.
					want := action == HostActionAccept || (action == HostActionReturn && port != 8080)
					tl.expectTCP(tl.wl["other"].NS, to, want)
				}
			}
			// Workload to workload is not the host's business.
			tl.expectWL("web", "db", 5432, V4, true)
			tl.expectWL("other", "db", 5432, V6, true)
		})
	}
}

// A router advertisement from a workload never reaches the host's IPv6
// stack: even with accept_ra turned on for the veth, the host learns no
// default route from it.
func TestTrafficRouterAdvertisementFromWorkloadDropped(t *testing.T) {
	tl := newTrafficLab(t, Config{IPv6: true})
	w := tl.wl["other"]
	// accept_ra=2: accept even with forwarding on, as a misconfigured
	// host would; Calyx's veths have 0 (routes/veth), this proves the
	// ip6tables side on its own.
	if _, err := netlab.Exec(tl.ctx, tl.host.NS, "sysctl", "-qw", "net.ipv6.conf.cxother.accept_ra=2"); err != nil {
		t.Fatal(err)
	}
	waitLinkLocal(t, w.NS, "eth0")
	if err := netlab.SendRouterAdvertisement(w.NS, "eth0"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	out, err := netlab.Exec(tl.ctx, tl.host.NS, "ip", "-6", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "cxother") {
		t.Fatalf("the host took the workload's router advertisement: %s", out)
	}
	// The same RA with Calyx's chains gone is taken: the test can fail.
	if _, err := netlab.Exec(tl.ctx, tl.host.NS, "ip6tables", "-F", chainInput); err != nil {
		t.Fatal(err)
	}
	if err := netlab.SendRouterAdvertisement(w.NS, "eth0"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		out, _ = netlab.Exec(tl.ctx, tl.host.NS, "ip", "-6", "route", "show", "default")
		if strings.Contains(out, "cxother") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("without Calyx's chains the RA was not taken either (%q): the test proves nothing", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLinkLocal waits until ifname in ns has a usable (not tentative)
// link-local address: an RA must come from one.
func waitLinkLocal(t *testing.T, ns, ifname string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := netlab.Exec(t.Context(), ns, "ip", "-6", "addr", "show", "dev", ifname, "scope", "link")
		if strings.Contains(out, "fe80:") && !strings.Contains(out, "tentative") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s has no usable link-local address: %s", ifname, ns, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
