package lab

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

const fabricBridge = "br0"

// addNamespace records the namespace in the state (first, so that a crash
// right after never leaves it unknown) and creates it with loopback up.
func (l *Lab) addNamespace(ctx context.Context, ns string) error {
	l.st.addNamespace(ns)
	if err := l.save(); err != nil {
		return err
	}
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("creating namespace: %w", err)
	}
	return ipIn(ctx, ns, "link", "set", "lo", "up")
}

// buildFabric makes the fabric namespace and its bridge (with its IPv6
// address too in a dual-stack lab).
func (l *Lab) buildFabric(ctx context.Context) error {
	ns := l.names.fabric()
	if err := l.addNamespace(ctx, ns); err != nil {
		return err
	}
	steps := [][]string{
		{"link", "add", fabricBridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"addr", "add", FabricGateway + "/" + strconv.Itoa(FabricPrefixLen), "dev", fabricBridge},
	}
	if l.opts.IPv6 {
		// nodad: the address is usable at once instead of after a second
		// of duplicate address detection on a bridge nobody else uses.
		steps = append(steps, []string{"addr", "add", FabricGateway6 + "/" + strconv.Itoa(FabricPrefixLen6), "dev", fabricBridge, "nodad"})
	}
	steps = append(steps, []string{"link", "set", fabricBridge, "up"})
	for _, s := range steps {
		if err := ipIn(ctx, ns, s...); err != nil {
			return fmt.Errorf("fabric: %w", err)
		}
	}
	return nil
}

// plug creates a namespace for a fabric member and connects it to the
// bridge with a veth pair: "port" on the bridge side, eth0 with addr inside
// and, when addr6 is not empty, that IPv6 address and a default IPv6 route
// via the bridge too.
func (l *Lab) plug(ctx context.Context, ns, port, addr, addr6 string) error {
	if err := l.addNamespace(ctx, ns); err != nil {
		return err
	}
	fabric := l.names.fabric()
	// Both ends are created from inside lab namespaces: no link ever
	// appears in the root namespace, not even for a moment.
	if err := ipIn(ctx, fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
		return fmt.Errorf("plugging %s into the fabric: %w", ns, err)
	}
	type step struct {
		ns   string
		args []string
	}
	steps := []step{
		{fabric, []string{"link", "set", port, "master", fabricBridge, "up"}},
		{ns, []string{"addr", "add", addr + "/" + strconv.Itoa(FabricPrefixLen), "dev", "eth0"}},
	}
	if addr6 != "" {
		steps = append(steps, step{ns, []string{"addr", "add", addr6 + "/" + strconv.Itoa(FabricPrefixLen6), "dev", "eth0", "nodad"}})
	}
	steps = append(steps,
		step{ns, []string{"link", "set", "eth0", "up"}},
		step{ns, []string{"route", "add", "default", "via", FabricGateway, "dev", "eth0"}},
	)
	if addr6 != "" {
		steps = append(steps, step{ns, []string{"-6", "route", "add", "default", "via", FabricGateway6, "dev", "eth0"}})
	}
	for _, s := range steps {
		if addr6 != "" && s.args[0] == "link" && s.args[1] == "set" && s.args[2] == "eth0" {
			// Before the link comes up: without duplicate address detection
			// its link-local address is usable at once. A host forwarding a
			// workload's packet sends its neighbour solicitation from that
			// address only; while it is tentative (up to 2 s) the kernel
			// sends none, and the first packets to a next hop are lost.
			if err := sysctlIn(ctx, ns, "net.ipv6.conf.eth0.accept_dad=0"); err != nil {
				return err
			}
		}
		if err := ipIn(ctx, s.ns, s.args...); err != nil {
			return fmt.Errorf("plugging %s into the fabric: %w", ns, err)
		}
	}
	return nil
}

// hostIPv6 is host i's IPv6 fabric address, or "" in an IPv4-only lab.
func (l *Lab) hostIPv6(i int) string {
	if !l.opts.IPv6 {
		return ""
	}
	return HostIPv6(i)
}

// buildHost makes host i: namespace, fabric port, forwarding on. The
// default route via the fabric gives the agent's proxy-ARP for 169.254.1.1
// the covering unicast route it needs (and the IPv6 default route does the
// same for the workloads' fe80::1 in a dual-stack lab).
func (l *Lab) buildHost(ctx context.Context, i int) error {
	ns := l.names.host(i)
	if err := l.plug(ctx, ns, "h"+strconv.Itoa(i), HostIP(i), l.hostIPv6(i)); err != nil {
		return err
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
		if err := sysctlIn(ctx, ns, kv); err != nil {
			return err
		}
	}
	return nil
}

// sysctlIn sets one sysctl inside a namespace (/proc/sys/net is per
// namespace, so it must be written from a thread inside it).
func sysctlIn(ctx context.Context, ns, kv string) error {
	key, val, _ := strings.Cut(kv, "=")
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return inNamespace(ns, func() error {
		if err := writeFile(path, val); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", kv, ns, err)
		}
		return nil
	})
}
