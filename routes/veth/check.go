package veth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
	"github.com/calyx-net/calyx/routes/sysctl"
)

// Check verifies that the workload's plumbing is as Setup left it: the
// workload end with its addresses and routes, the host end up with its MAC
// and proxy-ARP settings, and the two being one pair. The error names
// every problem found.
func (p *Plumber) Check(ctx context.Context, spec Spec) error {
	spec, err := spec.normalized()
	if err != nil {
		return fmt.Errorf("workload spec: %w", err)
	}
	if !netns.Exists(spec.NetNSPath) {
		return fmt.Errorf("workload network namespace %s does not exist", spec.NetNSPath)
	}
	var (
		contLink netlink.Link
		problems []error
	)
	err = netns.DoHandle(spec.NetNSPath, func(h *netlink.Handle) error {
		contLink, problems = checkContainerSide(h, spec)
		return nil
	})
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	err = netns.DoHandle(p.opts.HostNetNSPath, func(h *netlink.Handle) error {
		problems = append(problems, p.checkHostSide(h, spec, contLink)...)
		return nil
	})
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("workload %s: %w", spec.HostIfName, errors.Join(problems...))
	}
	return nil
}

func checkContainerSide(h *netlink.Handle, spec Spec) (netlink.Link, []error) {
	name := spec.ContainerIfName
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, []error{fmt.Errorf("interface %s missing in %s: %w", name, spec.NetNSPath, err)}
	}
	var problems []error
	a := link.Attrs()
	if link.Type() != "veth" {
		problems = append(problems, fmt.Errorf("%s is a %s, not a veth", name, link.Type()))
	}
	if a.RawFlags&unix.IFF_UP == 0 {
		problems = append(problems, fmt.Errorf("%s is down", name))
	}
	if a.MTU != spec.MTU {
		problems = append(problems, fmt.Errorf("%s has MTU %d, want %d", name, a.MTU, spec.MTU))
	}
	addrs, err := h.AddrList(link, unix.AF_UNSPEC)
	if err != nil {
		return link, append(problems, fmt.Errorf("list addresses of %s: %w", name, err))
	}
	have := make(map[netip.Prefix]bool)
	for _, ad := range addrs {
		if pa, ok := netip.AddrFromSlice(ad.IP); ok {
			ones, _ := ad.Mask.Size()
			have[netip.PrefixFrom(pa.Unmap(), ones)] = true
		}
	}
	for _, want := range spec.Addresses {
		if !have[want] {
			problems = append(problems, fmt.Errorf("address %s missing on %s", want, name))
		}
	}
	// The interface's routes in any table: a secondary interface keeps
	// them in its own (see SecondaryTable).
	routes, err := h.RouteListFiltered(unix.AF_UNSPEC, &netlink.Route{LinkIndex: a.Index, Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return link, append(problems, fmt.Errorf("list routes via %s: %w", name, err))
	}
	if spec.hasV4() {
		if !hasRoute(routes, netip.PrefixFrom(GatewayV4, 32), netip.Addr{}) {
			problems = append(problems, fmt.Errorf("route %s dev %s scope link missing", GatewayV4, name))
		}
		if !hasRoute(routes, netip.MustParsePrefix("0.0.0.0/0"), GatewayV4) {
			problems = append(problems, fmt.Errorf("default route via %s dev %s missing", GatewayV4, name))
		}
	}
	if spec.hasV6() && !hasRoute(routes, netip.MustParsePrefix("::/0"), GatewayV6) {
		problems = append(problems, fmt.Errorf("default route via %s dev %s missing", GatewayV6, name))
	}
	return link, problems
}

func (p *Plumber) checkHostSide(h *netlink.Handle, spec Spec, contLink netlink.Link) []error {
	name := spec.HostIfName
	link, err := h.LinkByName(name)
	if err != nil {
		return []error{fmt.Errorf("host interface %s missing: %w", name, err)}
	}
	var problems []error
	a := link.Attrs()
	if link.Type() != "veth" {
		problems = append(problems, fmt.Errorf("host interface %s is a %s, not a veth", name, link.Type()))
	}
	if a.RawFlags&unix.IFF_UP == 0 {
		problems = append(problems, fmt.Errorf("host interface %s is down", name))
	}
	if a.MTU != spec.MTU {
		problems = append(problems, fmt.Errorf("host interface %s has MTU %d, want %d", name, a.MTU, spec.MTU))
	}
	if !bytes.Equal(a.HardwareAddr, HostMAC) {
		problems = append(problems, fmt.Errorf("host interface %s has MAC %s, want %s", name, a.HardwareAddr, HostMAC))
	}
	if contLink != nil && (a.ParentIndex != contLink.Attrs().Index || contLink.Attrs().ParentIndex != a.Index) {
		problems = append(problems, fmt.Errorf("host interface %s and %s in %s are not peers", name, spec.ContainerIfName, spec.NetNSPath))
	}
	v6 := spec.hasV6()
	err = netns.Do(p.opts.HostNetNSPath, func() error {
		for _, s := range sysctl.HostInterface(name, v6) {
			got, err := sysctl.Read(s.Key)
			if err != nil {
				problems = append(problems, err)
			} else if got != s.Value {
				problems = append(problems, fmt.Errorf("%s is %s, want %s", s.Key, got, s.Value))
			}
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err)
	}
	if v6 {
		addrs, err := h.AddrList(link, unix.AF_INET6)
		if err != nil {
			problems = append(problems, fmt.Errorf("list addresses of %s: %w", name, err))
		} else if !hasAddr(addrs, GatewayV6) {
			problems = append(problems, fmt.Errorf("gateway address %s missing on host interface %s", GatewayV6, name))
		}
	}
	return problems
}

func hasRoute(routes []netlink.Route, dst netip.Prefix, gw netip.Addr) bool {
	for _, r := range routes {
		var got netip.Prefix
		if r.Dst == nil {
			got = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if r.Family == unix.AF_INET6 {
				got = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
		} else if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ones, _ := r.Dst.Mask.Size()
			got = netip.PrefixFrom(a.Unmap(), ones)
		}
		if got != dst {
			continue
		}
		rgw, _ := netip.AddrFromSlice(r.Gw)
		if rgw.Unmap() == gw {
			return true
		}
	}
	return false
}

func hasAddr(addrs []netlink.Addr, want netip.Addr) bool {
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got == want {
			return true
		}
	}
	return false
}
