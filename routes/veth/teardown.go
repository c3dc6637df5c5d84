package veth

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
)

// Teardown removes a workload's veth pair. It is idempotent: a missing
// namespace or interface counts as removed. Deleting the host end removes
// both ends; the workload end is also looked for in case the host end was
// renamed or lost.
func (p *Plumber) Teardown(ctx context.Context, netnsPath, containerIfName, hostIfName string) error {
	if hostIfName == "" {
		return errors.New("teardown: host interface name is empty")
	}
	if err := validIfName("host interface", hostIfName); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	if containerIfName == "" {
		containerIfName = DefaultContainerIfName
	}
	err := netns.DoHandle(p.opts.HostNetNSPath, func(h *netlink.Handle) error {
		return deleteVeth(h, hostIfName, nil)
	})
	if err != nil {
		return fmt.Errorf("teardown host side: %w", err)
	}
	if ctx.Err() != nil || netnsPath == "" || !netns.Exists(netnsPath) {
		return nil
	}
	err = netns.DoHandle(netnsPath, func(h *netlink.Handle) error {
		if err := deleteSecondaryRules(h, containerIfName); err != nil {
			return err
		}
		err := deleteVeth(h, containerIfName, func(l netlink.Link) error { return p.ownWorkloadEnd(h, l) })
		if errors.Is(err, errNotOurs) {
			p.log.Warn("workload interface is not one of ours; left alone", "ifname", containerIfName, "netns", netnsPath, "why", err)
			return nil
		}
		return err
	})
	if err != nil && !errors.Is(err, netns.ErrNotExist) {
		return fmt.Errorf("teardown workload side in %s: %w", netnsPath, err)
	}
	p.log.Debug("workload unwired", "host_if", hostIfName, "netns", netnsPath)
	return nil
}

// deleteVeth deletes the named link if it is a veth (and ours accepts it,
// when given); a missing link is fine, any other kind of link is left
// alone and reported.
func deleteVeth(h *netlink.Handle, name string, ours func(netlink.Link) error) error {
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("%s is a %s, not a veth: left alone", name, l.Type())
	}
	if ours != nil {
		if err := ours(l); err != nil {
			return err
		}
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// deleteSecondaryRules removes the source rules Setup added for a
// secondary interface (their routes went with the link).
func deleteSecondaryRules(h *netlink.Handle, ifName string) error {
	table := SecondaryTable(ifName)
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := h.RuleList(fam)
		if err != nil {
			return fmt.Errorf("list rules: %w", err)
		}
		for i := range rules {
			if rules[i].Table == table && rules[i].Priority == secondaryRulePriority {
				if err := h.RuleDel(&rules[i]); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("delete rule to table %d: %w", table, err)
				}
			}
		}
	}
	return nil
}
