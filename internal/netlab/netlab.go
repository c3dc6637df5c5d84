// Package netlab builds the small Calico-style labs the policy tests and
// benchmarks run in: a "host" network namespace with an uplink to a third
// namespace (so proxy-ARP answers), and workloads in their own namespaces
// attached by veth with a /32 (/128) and a default route via 169.254.1.1
// (fe80::1). Everything lives in namespaces the lab creates and Close
// removes; nothing touches the root namespace.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// Available reports why labs cannot run here ("" when they can): they need
// root and the ip command.
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs the ip command (iproute2)"
	}
	return ""
}

// Lab owns a set of namespaces named <prefix>-<random>-<role>.
type Lab struct {
	id  string
	mu  sync.Mutex
	nss []string
}

// New starts an empty lab. prefix should name the package, so leftovers are
// easy to attribute.
func New(prefix string) *Lab {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return &Lab{id: prefix + "-" + hex.EncodeToString(b)}
}

// Run runs a command and returns its combined output.
func Run(ctx context.Context, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Exec runs a command inside a namespace.
func Exec(ctx context.Context, ns string, argv ...string) (string, error) {
	return Run(ctx, append([]string{"ip", "netns", "exec", ns}, argv...)...)
}

// NS creates a namespace for a role and returns its name.
func (l *Lab) NS(ctx context.Context, role string) (string, error) {
	name := l.id + "-" + role
	if len(name) > 60 {
		return "", fmt.Errorf("namespace name %q is too long", name)
	}
	if _, err := Run(ctx, "ip", "netns", "add", name); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.nss = append(l.nss, name)
	l.mu.Unlock()
	if _, err := Exec(ctx, name, "ip", "link", "set", "lo", "up"); err != nil {
		return name, err
	}
	return name, nil
}

// Close kills what runs in the lab's namespaces and deletes them (their
// veths go with them).
func (l *Lab) Close() error {
	l.mu.Lock()
	nss := l.nss
	l.nss = nil
	l.mu.Unlock()
	ctx := context.Background()
	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		if out, err := Run(ctx, "ip", "netns", "pids", nss[i]); err == nil {
			for _, pid := range strings.Fields(out) {
				_, _ = Run(ctx, "kill", "-9", pid)
			}
		}
		if _, err := Run(ctx, "ip", "netns", "del", nss[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Host is a namespace that routes for its workloads.
type Host struct {
	lab    *Lab
	NS     string
	Uplink string // the namespace at the other end of the default route
}

// Addresses of the uplink link (benchmarking range).
var (
	HostUplinkV4   = netip.MustParseAddr("198.18.0.1")
	UplinkPeerV4   = netip.MustParseAddr("198.18.0.2")
	HostUplinkV6   = netip.MustParseAddr("fd00:18::1")
	UplinkPeerV6   = netip.MustParseAddr("fd00:18::2")
	GatewayV4      = "169.254.1.1"
	GatewayV6      = "fe80::1"
	workloadMAC    = "ee:ee:ee:ee:ee:ee"
	uplinkIfname   = "up0"
	workloadIfname = "eth0"
)

// AddHost creates a host namespace with forwarding on and a default route
// (v4 and v6) through a veth to an uplink namespace.
func (l *Lab) AddHost(ctx context.Context, role string) (*Host, error) {
	hns, err := l.NS(ctx, role)
	if err != nil {
		return nil, err
	}
	uns, err := l.NS(ctx, role+"-up")
	if err != nil {
		return nil, err
	}
	h := &Host{lab: l, NS: hns, Uplink: uns}
	steps := [][]string{
		{"ip", "link", "add", uplinkIfname, "netns", hns, "type", "veth", "peer", "name", "eth0", "netns", uns},
		{"ip", "netns", "exec", hns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"},
		{"ip", "netns", "exec", hns, "ip", "addr", "add", HostUplinkV4.String() + "/30", "dev", uplinkIfname},
		{"ip", "netns", "exec", hns, "ip", "addr", "add", HostUplinkV6.String() + "/64", "dev", uplinkIfname, "nodad"},
		{"ip", "netns", "exec", hns, "ip", "link", "set", uplinkIfname, "up"},
		{"ip", "netns", "exec", uns, "ip", "addr", "add", UplinkPeerV4.String() + "/30", "dev", "eth0"},
		{"ip", "netns", "exec", uns, "ip", "addr", "add", UplinkPeerV6.String() + "/64", "dev", "eth0", "nodad"},
		{"ip", "netns", "exec", uns, "ip", "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", hns, "ip", "route", "add", "default", "via", UplinkPeerV4.String()},
		{"ip", "netns", "exec", hns, "ip", "-6", "route", "add", "default", "via", UplinkPeerV6.String()},
	}
	for _, s := range steps {
		if _, err := Run(ctx, s...); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Workload is a namespace attached to a host by a veth, Calico style.
type Workload struct {
	NS     string
	Ifname string // host side
	IPv4   netip.Addr
	IPv6   netip.Addr // invalid when the workload has none
}

// AddWorkload creates a workload namespace and wires it: eth0 with the
// /32 (and /128), default via 169.254.1.1 (fe80::1) on-link; on the host
// the veth ifname with MAC ee:ee:ee:ee:ee:ee, proxy_arp=1, proxy_delay=0,
// fe80::1 and host routes to the workload's addresses.
func (h *Host) AddWorkload(ctx context.Context, role, ifname string, v4, v6 netip.Addr) (*Workload, error) {
	wns, err := h.lab.NS(ctx, role)
	if err != nil {
		return nil, err
	}
	w := &Workload{NS: wns, Ifname: ifname, IPv4: v4, IPv6: v6}
	hx := func(a ...string) []string { return append([]string{"ip", "netns", "exec", h.NS}, a...) }
	wx := func(a ...string) []string { return append([]string{"ip", "netns", "exec", wns}, a...) }
	steps := [][]string{
		{"ip", "link", "add", ifname, "netns", h.NS, "type", "veth", "peer", "name", workloadIfname, "netns", wns},
		hx("ip", "link", "set", ifname, "address", workloadMAC),
		hx("sysctl", "-qw", "net.ipv4.conf."+ifname+".proxy_arp=1", "net.ipv4.neigh."+ifname+".proxy_delay=0"),
		hx("ip", "link", "set", ifname, "up"),
		hx("ip", "route", "add", v4.String()+"/32", "dev", ifname, "scope", "link"),
		wx("ip", "addr", "add", v4.String()+"/32", "dev", workloadIfname),
		wx("ip", "link", "set", workloadIfname, "up"),
		wx("ip", "route", "add", GatewayV4, "dev", workloadIfname, "scope", "link"),
		wx("ip", "route", "add", "default", "via", GatewayV4, "dev", workloadIfname),
	}
	if v6.IsValid() {
		steps = append(steps,
			hx("ip", "addr", "add", GatewayV6+"/64", "dev", ifname, "nodad"),
			hx("ip", "-6", "route", "add", v6.String()+"/128", "dev", ifname),
			wx("ip", "addr", "add", v6.String()+"/128", "dev", workloadIfname, "nodad"),
			wx("ip", "-6", "route", "add", "default", "via", GatewayV6, "dev", workloadIfname),
		)
	}
	for _, s := range steps {
		if _, err := Run(ctx, s...); err != nil {
			return nil, err
		}
	}
	return w, nil
}
