package veth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
	"github.com/calyx-net/calyx/routes/sysctl"
)

// Setup creates the workload's veth pair, the workload end directly inside
// spec.NetNSPath, and configures both ends. It is all or nothing: if any
// step fails, what it created is removed before it returns.
func (p *Plumber) Setup(ctx context.Context, spec Spec) (res Result, err error) {
	spec, err = spec.normalized()
	if err != nil {
		return Result{}, fmt.Errorf("workload spec: %w", err)
	}
	pair, err := p.Create(ctx, spec)
	if err != nil {
		return Result{}, err
	}
	defer pair.Close()
	res, err = pair.Configure(ctx, spec.Addresses)
	if err != nil {
		if rerr := pair.Remove(); rerr != nil {
			err = errors.Join(err, fmt.Errorf("roll back: %w", rerr))
		}
		return Result{}, err
	}
	return res, nil
}

// Pair is a veth pair that Create made and Configure has not finished: the
// workload end is in its namespace with its name, MAC and MTU, but has no
// addresses or routes and both ends are down. It holds netlink handles in
// both namespaces; Close releases them.
type Pair struct {
	p      *Plumber
	spec   Spec
	hostH  *netlink.Handle
	contH  *netlink.Handle
	closed bool
}

// Create makes the workload's veth pair, the workload end directly inside
// spec.NetNSPath, and sets the host end's IPv4 sysctls; spec.Addresses may
// still be empty (the agent creates the pair while IPAM allocates). It
// never takes over an existing interface, and if it fails it leaves
// nothing. The caller finishes the pair with Configure or removes it.
func (p *Plumber) Create(ctx context.Context, spec Spec) (_ *Pair, err error) {
	spec, err = spec.normalizedNames()
	if err != nil {
		return nil, fmt.Errorf("workload spec: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hostH, err := netns.NewHandle(p.opts.HostNetNSPath)
	if err != nil {
		return nil, err
	}
	contNS, err := netns.Open(spec.NetNSPath)
	if err != nil {
		hostH.Close()
		return nil, fmt.Errorf("workload network namespace: %w", err)
	}
	defer contNS.Close()
	contH, err := netlink.NewHandleAt(contNS, unix.NETLINK_ROUTE)
	if err != nil {
		hostH.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", spec.NetNSPath, err)
	}
	pair := &Pair{p: p, spec: spec, hostH: hostH, contH: contH}
	defer func() {
		if err != nil {
			pair.Close()
		}
	}()

	// Never take over an interface that is already there.
	if _, lerr := hostH.LinkByName(spec.HostIfName); lerr == nil {
		return nil, fmt.Errorf("host interface %s already exists", spec.HostIfName)
	} else if !isNotFound(lerr) {
		return nil, fmt.Errorf("look up host interface %s: %w", spec.HostIfName, lerr)
	}
	if _, lerr := contH.LinkByName(spec.ContainerIfName); lerr == nil {
		return nil, fmt.Errorf("interface %s already exists in %s", spec.ContainerIfName, spec.NetNSPath)
	} else if !isNotFound(lerr) {
		return nil, fmt.Errorf("look up %s in %s: %w", spec.ContainerIfName, spec.NetNSPath, lerr)
	}

	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:         spec.HostIfName,
			MTU:          spec.MTU,
			HardwareAddr: HostMAC,
		},
		PeerName:         spec.ContainerIfName,
		PeerNamespace:    netlink.NsFd(int(contNS)),
		PeerMTU:          uint32(spec.MTU),
		PeerHardwareAddr: spec.ContainerMAC,
	}
	if err := hostH.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %s (peer %s in %s): %w", spec.HostIfName, spec.ContainerIfName, spec.NetNSPath, err)
	}
	defer func() {
		if err != nil {
			if cerr := pair.Remove(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", cerr))
			}
		}
	}()
	if err = p.step(StepVethCreated); err != nil {
		return nil, err
	}
	// The family-independent host sysctls, while the addresses are not
	// known yet; Configure adds the IPv6 ones.
	err = netns.Do(p.opts.HostNetNSPath, func() error {
		_, err := sysctl.Ensure(sysctl.HostInterface(spec.HostIfName, false))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("host interface %s settings: %w", spec.HostIfName, err)
	}
	return pair, nil
}

// Configure gives a pair from Create its addresses (each a /32 or /128),
// the workload end's routes and the host end's proxy-ARP, and brings both
// ends up. If it fails, the pair stays as far as it got: the caller
// removes it (Remove, or Teardown later).
func (pr *Pair) Configure(ctx context.Context, addrs []netip.Prefix) (Result, error) {
	p := pr.p
	spec := pr.spec
	spec.Addresses = addrs
	spec, err := spec.normalized()
	if err != nil {
		return Result{}, fmt.Errorf("workload spec: %w", err)
	}
	contLink, err := p.setupContainerSide(ctx, pr.contH, spec)
	if err != nil {
		return Result{}, err
	}
	if err = p.step(StepContainerConfigured); err != nil {
		return Result{}, err
	}
	hostLink, err := p.setupHostSide(ctx, pr.hostH, spec)
	if err != nil {
		return Result{}, err
	}
	if err = p.step(StepHostConfigured); err != nil {
		return Result{}, err
	}
	p.log.Debug("workload wired", "host_if", spec.HostIfName, "netns", spec.NetNSPath, "addresses", spec.Addresses)
	return Result{
		ContainerIfName: spec.ContainerIfName,
		ContainerMAC:    contLink.Attrs().HardwareAddr,
		ContainerIndex:  contLink.Attrs().Index,
		SandboxPath:     spec.NetNSPath,
		HostIfName:      spec.HostIfName,
		HostMAC:         hostLink.Attrs().HardwareAddr,
		HostIndex:       hostLink.Attrs().Index,
	}, nil
}

// Remove deletes the pair (deleting the host end removes both ends); a
// pair already gone is fine. It works after Close too.
func (pr *Pair) Remove() error {
	if pr.closed {
		return netns.DoHandle(pr.p.opts.HostNetNSPath, func(h *netlink.Handle) error { return deleteLink(h, pr.spec.HostIfName) })
	}
	return deleteLink(pr.hostH, pr.spec.HostIfName)
}

// Close releases the pair's netlink handles; the pair itself stays.
func (pr *Pair) Close() {
	if pr.closed {
		return
	}
	pr.closed = true
	pr.hostH.Close()
	pr.contH.Close()
}

// setupContainerSide gives the workload end its addresses and its routes:
// 169.254.1.1 on-link and default via it; default via fe80::1 for IPv6.
func (p *Plumber) setupContainerSide(ctx context.Context, h *netlink.Handle, spec Spec) (netlink.Link, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	link, err := h.LinkByName(spec.ContainerIfName)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", spec.ContainerIfName, spec.NetNSPath, err)
	}
	err = netns.Do(spec.NetNSPath, func() error {
		switch {
		case spec.hasV6() && !sysctl.IPv6Available():
			return errors.New("IPv6 address requested but the workload namespace has no IPv6")
		case spec.hasV6():
			_, err := sysctl.Ensure(sysctl.WorkloadInterface(spec.ContainerIfName))
			return err
		case sysctl.IPv6Available():
			_, err := sysctl.Ensure(sysctl.WorkloadInterfaceIPv4Only(spec.ContainerIfName))
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("workload side IPv6 settings: %w", err)
	}
	for _, a := range spec.Addresses {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return nil, fmt.Errorf("add address %s to %s: %w", a, spec.ContainerIfName, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", spec.ContainerIfName, err)
	}
	idx := link.Attrs().Index
	var routes []*netlink.Route
	if spec.hasV4() {
		routes = append(routes,
			&netlink.Route{LinkIndex: idx, Dst: ipNet(netip.PrefixFrom(GatewayV4, 32)), Scope: netlink.SCOPE_LINK},
			&netlink.Route{LinkIndex: idx, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: GatewayV4.AsSlice()},
		)
	}
	if spec.hasV6() {
		routes = append(routes,
			&netlink.Route{LinkIndex: idx, Dst: ipNet(netip.MustParsePrefix("::/0")), Gw: GatewayV6.AsSlice()})
	}
	// A second interface of a workload (eth1 beside eth0) must not take
	// over the default route: its routes go to a table of its own, chosen
	// by source address, so replies leave by the interface they came in.
	secondary, err := hasDefaultRoute(h, idx)
	if err != nil {
		return nil, err
	}
	table := 0
	if secondary {
		table = SecondaryTable(spec.ContainerIfName)
	}
	for _, r := range routes {
		r.Table = table
		if err := h.RouteAdd(r); err != nil {
			return nil, fmt.Errorf("add route %s in %s: %w", r, spec.NetNSPath, err)
		}
	}
	if secondary {
		for _, a := range spec.Addresses {
			rule := netlink.NewRule()
			rule.Src = ipNet(a)
			rule.Table = table
			rule.Priority = secondaryRulePriority
			rule.Family = unix.AF_INET
			if a.Addr().Is6() {
				rule.Family = unix.AF_INET6
			}
			if err := h.RuleAdd(rule); err != nil {
				return nil, fmt.Errorf("add rule from %s lookup %d in %s: %w", a, table, spec.NetNSPath, err)
			}
		}
		p.log.Info("secondary workload interface: routes in their own table", "ifname", spec.ContainerIfName, "table", table)
	}
	// Re-read for the MAC the kernel gave it.
	link, err = h.LinkByIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("re-read %s: %w", spec.ContainerIfName, err)
	}
	return link, nil
}

// setupHostSide sets the proxy-ARP sysctls, brings the host end up and,
// for IPv6, gives it the gateway address fe80::1.
func (p *Plumber) setupHostSide(ctx context.Context, h *netlink.Handle, spec Spec) (netlink.Link, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	link, err := h.LinkByName(spec.HostIfName)
	if err != nil {
		return nil, fmt.Errorf("find host interface %s: %w", spec.HostIfName, err)
	}
	v6 := spec.hasV6()
	if v6 {
		// Create set the IPv4 ones.
		err = netns.Do(p.opts.HostNetNSPath, func() error {
			if !sysctl.IPv6Available() {
				return errors.New("IPv6 address requested but the host namespace has no IPv6")
			}
			_, err := sysctl.Ensure(sysctl.HostInterface(spec.HostIfName, true))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("host interface %s settings: %w", spec.HostIfName, err)
		}
		gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(GatewayV6, 64)), Flags: unix.IFA_F_NODAD}
		if err := h.AddrAdd(link, gw); err != nil {
			return nil, fmt.Errorf("add %s to %s: %w", GatewayV6, spec.HostIfName, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", spec.HostIfName, err)
	}
	return link, nil
}

// deleteLink removes a link by name; a missing link is not an error.
func deleteLink(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// secondaryRulePriority puts the source rules of secondary interfaces
// before the main table (32766).
const secondaryRulePriority = 1000

// SecondaryTable is the routing table of a workload interface that is not
// the one holding the default route. It is derived from the name so that
// Teardown finds it after the link is gone.
func SecondaryTable(ifName string) int {
	var h uint32 = 2166136261
	for i := 0; i < len(ifName); i++ {
		h = (h ^ uint32(ifName[i])) * 16777619
	}
	return 1000 + int(h%1000000)
}

// hasDefaultRoute reports whether the namespace already routes by default
// through an interface other than idx.
func hasDefaultRoute(h *netlink.Handle, idx int) (bool, error) {
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return false, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex != idx && (r.Gw != nil || len(r.MultiPath) > 0) {
				return true, nil
			}
		}
	}
	return false, nil
}
