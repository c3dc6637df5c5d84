package routes

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/internal/pfxmap"
)

// dumpAttempts bounds retries of a dump that the kernel marked interrupted
// (the table changed while it was being read).
const dumpAttempts = 5

// readKernel replaces the kernel view with a fresh read of our routes and
// of the interfaces. Only the apply goroutine calls it (applyMu held).
func (t *Table) readKernel() error {
	t.counters.resyncs.Add(1)
	actual := newKernelView()
	var extras []dupRoute
	for _, fam := range t.families() {
		a, e, err := t.readRoutes(fam)
		if err != nil {
			return err
		}
		for p, k := range a.All() {
			actual.Set(p, k)
		}
		extras = append(extras, e...)
	}
	links, err := t.readLinks()
	if err != nil {
		return err
	}
	t.actual, t.extras = actual, extras
	t.links = links
	clear(t.linkNames)
	for name, ls := range links {
		t.linkNames[ls.index] = name
	}
	return nil
}

func (t *Table) families() []int {
	switch t.opts.Family {
	case FamilyV4:
		return []int{unix.AF_INET}
	case FamilyV6:
		return []int{unix.AF_INET6}
	}
	return []int{unix.AF_INET, unix.AF_INET6}
}

// readRoutes lists the routes with our protocol in our table for one
// family. If two of ours share a destination (a hand-made duplicate with
// another metric), the one with the lowest metric is kept in view and the
// others are returned as extras to delete.
func (t *Table) readRoutes(family int) (*pfxmap.Map[kroute], []dupRoute, error) {
	var lastErr error
	for range dumpAttempts {
		actual := newKernelView()
		var extras []dupRoute
		err := t.k.listRoutes(family, t.table, t.opts.Protocol, func(p netip.Prefix, k kroute) {
			if prev, dup := actual.Get(p); dup {
				if k.priority < prev.priority {
					prev, k = k, prev
					actual.Set(p, prev)
				}
				extras = append(extras, dupRoute{dst: p, k: k})
				return
			}
			actual.Set(p, t.hops.kernel(k))
		})
		if err == nil {
			return actual, extras, nil
		}
		lastErr = err
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, nil, fmt.Errorf("list routes of protocol %d in table %d: %w", t.opts.Protocol, t.table, lastErr)
}

func (t *Table) readLinks() (map[string]linkState, error) {
	var lastErr error
	for range dumpAttempts {
		links, err := t.k.listLinks()
		if err == nil {
			return links, nil
		}
		lastErr = err
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list interfaces: %w", lastErr)
}

// KernelGateways reads the gateway routes of the table's protocol as the
// kernel holds them now: destination to next hops. The agent uses it at
// start to keep the routes it learned before a restart (BGP graceful
// restart) until its peers have sent theirs again.
func (t *Table) KernelGateways() (map[netip.Prefix][]netip.Addr, error) {
	out := map[netip.Prefix][]netip.Addr{}
	for _, fam := range t.families() {
		actual, _, err := t.readRoutes(fam)
		if err != nil {
			return nil, err
		}
		for p, k := range actual.All() {
			for _, h := range k.hops {
				if h.gw.IsValid() {
					out[p] = append(out[p], h.gw)
				}
			}
		}
	}
	return out, nil
}
