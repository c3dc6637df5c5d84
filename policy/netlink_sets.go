package policy

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// memberWriter adds and removes members of sets that exist, without
// running a process. The Dataplane uses it for plans that change nothing
// but set members (a new open endpoint, a label change) and falls back to
// ipset restore when it fails.
type memberWriter interface {
	writeMembers(ctx context.Context, ops []setOp) error
}

// netlinkSets writes set members with ipset's netlink protocol in one
// network namespace.
type netlinkSets struct {
	nsPath string // "" is the calling process's own namespace
}

// netnsRunDir is where `ip netns add` names namespaces.
const netnsRunDir = "/var/run/netns/"

// netlinkTarget says which namespace the netlink writes go to, and whether
// that can be known: an explicit NetNS, the namespace of an
// `ip netns exec NAME` prefix, or the agent's own when there is no prefix.
// Any other prefix could aim anywhere, so set members then go through it.
func netlinkTarget(cfg *Config) (nsPath string, ok bool) {
	p := cfg.CommandPrefix
	switch {
	case cfg.NetNS != "":
		return cfg.NetNS, true
	case len(p) == 0:
		return "", true
	case len(p) == 4 && p[0] == "ip" && p[1] == "netns" && p[2] == "exec":
		return netnsRunDir + p[3], true
	}
	return "", false
}

// netlinkTimeout bounds one request; the kernel answers at once, so only a
// wedged socket ever waits this long.
const netlinkTimeout = 5 * time.Second

func (w netlinkSets) handle() (*netlink.Handle, error) {
	if w.nsPath == "" {
		return netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	ns, err := netns.GetFromPath(w.nsPath)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", w.nsPath, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
}

// writeMembers adds, then deletes, each set's members in plan order (as
// the ipset restore text does). Adding a member that is there, or deleting
// one that is not, is no error.
func (w netlinkSets) writeMembers(ctx context.Context, ops []setOp) (err error) {
	// The library asserts its errors are errnos; one that is not would
	// panic, and the caller has a fallback for errors.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("netlink ipset: %v", r)
		}
	}()
	for _, op := range ops {
		for _, ms := range [][]SetMember{op.adds, op.dels} {
			for _, m := range ms {
				if m.Net.Bits() == 0 {
					return fmt.Errorf("ipset %s: member %s cannot be written over netlink", op.set.Name, memberString(m))
				}
			}
		}
	}
	h, err := w.handle()
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		return fmt.Errorf("netlink socket timeout: %w", err)
	}
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, m := range op.adds {
			if err := h.IpsetAdd(op.set.Name, ipsetEntry(m)); err != nil {
				return fmt.Errorf("adding %s to ipset %s: %w", memberString(m), op.set.Name, err)
			}
		}
		for _, m := range op.dels {
			if err := h.IpsetDel(op.set.Name, ipsetEntry(m)); err != nil {
				return fmt.Errorf("deleting %s from ipset %s: %w", memberString(m), op.set.Name, err)
			}
		}
	}
	return nil
}

// ipsetEntry is a member as a netlink entry. Replace leaves out
// NLM_F_EXCL, so the kernel takes an existing (or, on delete, missing)
// entry as success, like ipset -exist.
// The library leaves out a CIDR of 0 (the kernel would read a host
// address), so writeMembers refuses /0 members before getting here.
func ipsetEntry(m SetMember) *netlink.IPSetEntry {
	e := &netlink.IPSetEntry{
		IP:      net.IP(m.Net.Addr().AsSlice()),
		CIDR:    uint8(m.Net.Bits()),
		IFace:   m.Iface,
		Replace: true,
	}
	if m.Proto != 0 {
		// hash:ip,port takes no CIDR attribute for a host address.
		proto, port := m.Proto, m.Port
		e.CIDR, e.Protocol, e.Port = 0, &proto, &port
	}
	return e
}

func memberString(m SetMember) string {
	s := m.Net.String()
	if m.Iface != "" {
		s += "," + m.Iface
	}
	if m.Proto != 0 {
		s += "," + portMemberSuffix(m)
	}
	return s
}
