package veth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/netnstest"
	"github.com/calyx-net/calyx/routes"
	"github.com/calyx-net/calyx/routes/veth"
)

func TestHostInterfaceName(t *testing.T) {
	id := "node1/k8s/default/web-0/eth0"
	sum := sha256.Sum256([]byte(id))
	want := "cx" + hex.EncodeToString(sum[:])[:11]
	if got := veth.HostInterfaceName(id); got != want || len(got) != 13 {
		t.Fatalf("HostInterfaceName = %q, want %q", got, want)
	}
	if veth.HostInterfaceName(id) == veth.HostInterfaceName(id+"x") {
		t.Fatalf("different endpoints share a name")
	}
}

func TestSetupRejectsBadSpecs(t *testing.T) {
	p := veth.New(veth.Options{})
	good := veth.Spec{
		NetNSPath:  "/run/netns/does-not-matter",
		HostIfName: "cx0123456789a",
		Addresses:  []netip.Prefix{netip.MustParsePrefix("10.244.0.1/32")},
	}
	cases := []struct {
		name   string
		mutate func(*veth.Spec)
		want   string
	}{
		{"no netns", func(s *veth.Spec) { s.NetNSPath = "" }, "namespace path is empty"},
		{"missing netns", func(s *veth.Spec) { s.NetNSPath = "/run/netns/routes-no-such-ns" }, "does not exist"},
		{"long ifname", func(s *veth.Spec) { s.ContainerIfName = "eth0-but-way-too-long" }, "at most 15"},
		{"long host ifname", func(s *veth.Spec) { s.HostIfName = "cx0123456789abcdef" }, "at most 15"},
		{"slash in ifname", func(s *veth.Spec) { s.ContainerIfName = "eth/0" }, "contains"},
		{"no addresses", func(s *veth.Spec) { s.Addresses = nil }, "no workload addresses"},
		{"v4 not /32", func(s *veth.Spec) { s.Addresses = []netip.Prefix{netip.MustParsePrefix("10.244.0.1/24")} }, "must be /32"},
		{"v6 not /128", func(s *veth.Spec) { s.Addresses = []netip.Prefix{netip.MustParsePrefix("fd00::1/64")} }, "must be /128"},
		{"v4-mapped v6", func(s *veth.Spec) { s.Addresses = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.1/128")} }, "IPv4-mapped"},
		{"duplicate", func(s *veth.Spec) { s.Addresses = append(s.Addresses, s.Addresses[0]) }, "twice"},
		{"tiny MTU with v6", func(s *veth.Spec) {
			s.MTU = 1000
			s.Addresses = []netip.Prefix{netip.MustParsePrefix("fd00::1/128")}
		}, "MTU"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := good
			s.Addresses = append([]netip.Prefix(nil), good.Addresses...)
			c.mutate(&s)
			_, err := p.Setup(context.Background(), s)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Setup error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// lab is a host namespace with a fabric uplink (default routes through a
// third namespace, which proxy-ARP for 169.254.1.1 needs), the agent's
// sysctls and route table, and a Plumber working in it.
type lab struct {
	host, fabric netnstest.NS
	table        *routes.Table
	plumber      *veth.Plumber
}

func newLab(t *testing.T) *lab { return newLabFamilies(t, true) }

// newLabFamilies is newLab for a dual-stack node (ipv6) or an IPv4-only
// one, whose host sysctls leave IPv6 forwarding off.
func newLabFamilies(t *testing.T, ipv6 bool) *lab {
	t.Helper()
	l := &lab{host: netnstest.New(t, "host"), fabric: netnstest.New(t, "fab")}
	h, f := l.host, l.fabric
	h.MustRun(t, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "downlink", "netns", f.Name)
	h.MustRun(t, "ip", "addr", "add", "198.18.0.1/24", "dev", "uplink")
	h.MustRun(t, "ip", "addr", "add", "fd00:18::1/64", "dev", "uplink", "nodad")
	h.MustRun(t, "ip", "link", "set", "uplink", "up")
	f.MustRun(t, "ip", "addr", "add", "198.18.0.254/24", "dev", "downlink")
	f.MustRun(t, "ip", "addr", "add", "fd00:18::fe/64", "dev", "downlink", "nodad")
	f.MustRun(t, "ip", "link", "set", "downlink", "up")
	h.MustRun(t, "ip", "route", "add", "default", "via", "198.18.0.254")
	h.MustRun(t, "ip", "-6", "route", "add", "default", "via", "fd00:18::fe")

	if err := routes.NewSysctls(routes.SysctlOptions{NetNSPath: h.Path, IPv6: ipv6}).Apply(context.Background()); err != nil {
		t.Fatalf("host sysctls: %v", err)
	}
	tbl, err := routes.New(routes.Options{Protocol: routes.ProtoWorkload, NetNSPath: h.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Close)
	l.table = tbl
	l.plumber = veth.New(veth.Options{HostNetNSPath: h.Path})
	return l
}

// addWorkload wires a new namespace as the agent would on CNI ADD: Setup,
// then the host routes through the route table.
func (l *lab) addWorkload(t *testing.T, id string, addrs ...string) (netnstest.NS, veth.Spec) {
	t.Helper()
	w := netnstest.New(t, "wl")
	spec := veth.Spec{NetNSPath: w.Path, HostIfName: veth.HostInterfaceName(w.Name + id)}
	for _, a := range addrs {
		spec.Addresses = append(spec.Addresses, netip.MustParsePrefix(a))
	}
	res, err := l.plumber.Setup(context.Background(), spec)
	if err != nil {
		t.Fatalf("Setup %s: %v", id, err)
	}
	if res.ContainerIfName != "eth0" || res.ContainerIndex == 0 || len(res.ContainerMAC) != 6 || res.SandboxPath != w.Path {
		t.Fatalf("Setup result %+v incomplete", res)
	}
	if res.HostMAC.String() != "ee:ee:ee:ee:ee:ee" {
		t.Fatalf("host MAC %s, want ee:ee:ee:ee:ee:ee", res.HostMAC)
	}
	for _, a := range spec.Addresses {
		r := routes.Route{Dst: a, Type: routes.RouteDevice, LinkName: spec.HostIfName}
		if err := l.table.ApplyRoute(context.Background(), r); err != nil {
			t.Fatalf("host route %s: %v", a, err)
		}
	}
	return w, spec
}

// ping pings from ns until a reply comes or 10s pass.
func ping(t *testing.T, from netnstest.NS, addr string) {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("needs ping (Debian package iputils-ping)")
	}
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		if out, err = from.Run("ping", "-c1", "-W1", addr); err == nil {
			return
		}
	}
	t.Fatalf("ping %s from %s failed: %s", addr, from.Name, out)
}

func TestWorkloadsReachHostAndEachOther(t *testing.T) {
	l := newLab(t)
	w1, spec1 := l.addWorkload(t, "w1", "10.244.0.1/32", "fd00:244::1/128")
	w2, _ := l.addWorkload(t, "w2", "10.244.0.2/32", "fd00:244::2/128")

	ping(t, l.host, "10.244.0.1")
	ping(t, w1, "198.18.0.1")
	ping(t, l.host, "fd00:244::1")
	ping(t, w1, "fd00:18::1")
	ping(t, w1, "10.244.0.2")
	ping(t, w2, "10.244.0.1")
	ping(t, w1, "fd00:244::2")

	// The workload side as a user would see it.
	got := w1.MustRun(t, "ip", "-4", "route", "show")
	for _, want := range []string{"default via 169.254.1.1 dev eth0", "169.254.1.1 dev eth0 scope link"} {
		if !strings.Contains(got, want) {
			t.Errorf("workload routes %q lack %q", got, want)
		}
	}
	if got := w1.MustRun(t, "ip", "-6", "route", "show", "default"); !strings.Contains(got, "via fe80::1 dev eth0") {
		t.Errorf("workload IPv6 default route = %q", got)
	}
	if err := l.plumber.Check(context.Background(), spec1); err != nil {
		t.Fatalf("Check of a healthy workload: %v", err)
	}
}

func TestCheckNamesWhatIsBroken(t *testing.T) {
	l := newLab(t)
	w, spec := l.addWorkload(t, "w", "10.244.0.5/32", "fd00:244::5/128")
	ctx := context.Background()
	if err := l.plumber.Check(ctx, spec); err != nil {
		t.Fatalf("Check: %v", err)
	}
	l.host.MustRun(t, "sysctl", "-qw", "net.ipv4.conf."+spec.HostIfName+".proxy_arp=0")
	w.MustRun(t, "ip", "addr", "del", "10.244.0.5/32", "dev", "eth0")
	w.MustRun(t, "ip", "-6", "route", "del", "default")
	err := l.plumber.Check(ctx, spec)
	if err == nil {
		t.Fatalf("Check passed on a broken workload")
	}
	for _, want := range []string{"proxy_arp is 0", "address 10.244.0.5/32 missing", "default route via fe80::1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error %q does not mention %q", err, want)
		}
	}
	l.host.MustRun(t, "ip", "link", "set", spec.HostIfName, "down")
	if err := l.plumber.Check(ctx, spec); err == nil || !strings.Contains(err.Error(), "is down") {
		t.Errorf("Check error %v does not report the host side down", err)
	}
}

func TestTeardownLeavesNothingAndIsIdempotent(t *testing.T) {
	l := newLab(t)
	w, spec := l.addWorkload(t, "w", "10.244.0.7/32", "fd00:244::7/128")
	ctx := context.Background()
	for i := range 2 {
		if err := l.plumber.Teardown(ctx, spec.NetNSPath, "eth0", spec.HostIfName); err != nil {
			t.Fatalf("Teardown #%d: %v", i+1, err)
		}
	}
	assertNoWorkloadLinks(t, l.host, w)
	if got := l.host.MustRun(t, "ip", "route", "show", "10.244.0.7"); got != "" {
		t.Errorf("host route survived teardown: %q", got)
	}
	// A namespace that is already gone is success too.
	if err := l.plumber.Teardown(ctx, "/run/netns/routes-gone-already", "eth0", spec.HostIfName); err != nil {
		t.Fatalf("Teardown with a missing namespace: %v", err)
	}
}

func TestSetupRollsBackOnFailure(t *testing.T) {
	for _, step := range []veth.Step{veth.StepVethCreated, veth.StepContainerConfigured, veth.StepHostConfigured} {
		t.Run(string(step), func(t *testing.T) {
			l := newLab(t)
			w := netnstest.New(t, "wl")
			injected := errors.New("injected failure")
			p := veth.New(veth.Options{HostNetNSPath: l.host.Path, FailAfter: func(s veth.Step) error {
				if s == step {
					return injected
				}
				return nil
			}})
			spec := veth.Spec{
				NetNSPath:  w.Path,
				HostIfName: veth.HostInterfaceName(w.Name),
				Addresses:  []netip.Prefix{netip.MustParsePrefix("10.244.0.9/32"), netip.MustParsePrefix("fd00:244::9/128")},
			}
			_, err := p.Setup(context.Background(), spec)
			if !errors.Is(err, injected) {
				t.Fatalf("Setup error = %v, want the injected one", err)
			}
			assertNoWorkloadLinks(t, l.host, w)
			// And the same spec works afterwards.
			if _, err := l.plumber.Setup(context.Background(), spec); err != nil {
				t.Fatalf("Setup after rollback: %v", err)
			}
		})
	}
}

func TestSetupRefusesExistingInterfaces(t *testing.T) {
	l := newLab(t)
	_, spec := l.addWorkload(t, "w", "10.244.0.11/32")
	_, err := l.plumber.Setup(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second Setup of the same workload: %v, want 'already exists'", err)
	}
	if err := l.plumber.Check(context.Background(), spec); err != nil {
		t.Fatalf("the refused Setup damaged the workload: %v", err)
	}
}

// assertNoWorkloadLinks checks that the host has only its uplink and lo and
// the workload namespace only lo.
func assertNoWorkloadLinks(t *testing.T, host, w netnstest.NS) {
	t.Helper()
	if got := linkNames(t, host); got != "lo uplink" {
		t.Errorf("host links = %q, want only lo and uplink", got)
	}
	if got := linkNames(t, w); got != "lo" {
		t.Errorf("workload links = %q, want only lo", got)
	}
}

func linkNames(t *testing.T, ns netnstest.NS) string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(ns.MustRun(t, "ip", "-o", "link", "show"), "\n") {
		// Only "N: name: ..." lines: ip(8) also writes notes to stderr
		// ("Peer netns reference is invalid." while a peer namespace goes).
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasSuffix(f[0], ":") && isDigits(strings.TrimSuffix(f[0], ":")) {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return strings.Join(names, " ")
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
