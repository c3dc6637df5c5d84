package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/e2e/lab"
)

// soakHostView is what one host's kernel holds of the agent's objects.
type soakHostView struct {
	links      map[string]bool            // cx* interfaces
	wlRoutes   map[netip.Prefix]string    // proto 201 unicast routes -> device name
	blackholes map[netip.Prefix]bool      // proto 201 blackholes
	learned    map[netip.Prefix]bool      // proto 202 routes
	chains     map[string]bool            // "table/chain" of every cx- chain
	policyJump map[string]bool            // filter cx-tw-<if> chains that jump to a cx-pi- chain
	sets       map[string]map[string]bool // cx- ipsets -> members
	rules      int                        // rules in cx- chains
	linkNames  map[int]string             // ifindex -> name
}

// soakNetlink holds one netlink handle per host namespace.
type soakNetlink map[string]*netlink.Handle

func openSoakNetlink(l *lab.Lab) (soakNetlink, error) {
	out := soakNetlink{}
	for _, h := range l.Hosts() {
		ns, err := netns.GetFromName(h.Netns)
		if err != nil {
			out.close()
			return nil, fmt.Errorf("namespace of %s: %w", h.Name, err)
		}
		hd, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		ns.Close()
		if err != nil {
			out.close()
			return nil, fmt.Errorf("netlink in %s: %w", h.Name, err)
		}
		out[h.Name] = hd
	}
	return out, nil
}

func (n soakNetlink) close() {
	for _, h := range n {
		h.Close()
	}
}

// readHost reads host's links, routes, chains and sets.
func (n soakNetlink) readHost(ctx context.Context, l *lab.Lab, host string) (*soakHostView, error) {
	h := n[host]
	v := &soakHostView{
		links: map[string]bool{}, wlRoutes: map[netip.Prefix]string{}, blackholes: map[netip.Prefix]bool{},
		learned: map[netip.Prefix]bool{}, chains: map[string]bool{}, policyJump: map[string]bool{},
		sets: map[string]map[string]bool{}, linkNames: map[int]string{},
	}
	links, err := soakRetryDump(func() ([]netlink.Link, error) { return h.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("links of %s: %w", host, err)
	}
	for _, lk := range links {
		name := lk.Attrs().Name
		v.linkNames[lk.Attrs().Index] = name
		if strings.HasPrefix(name, "cx") {
			v.links[name] = true
		}
	}
	routes, err := soakRetryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("routes of %s: %w", host, err)
	}
	for _, rt := range routes {
		if rt.Dst == nil {
			continue
		}
		p := prefixOf(rt.Dst)
		switch int(rt.Protocol) {
		case protoWorkload:
			if rt.Type == unix.RTN_BLACKHOLE {
				v.blackholes[p] = true
			} else {
				v.wlRoutes[p] = v.linkNames[rt.LinkIndex]
			}
		case protoBGP:
			v.learned[p] = true
		}
	}
	save, err := l.ExecContext(ctx, host, "iptables-save")
	if err != nil {
		return nil, err
	}
	v.parseIptablesSave(save)
	sets, err := l.ExecContext(ctx, host, "ipset", "save")
	if err != nil {
		return nil, err
	}
	v.parseIpsetSave(sets)
	return v, nil
}

func soakRetryDump[T any](fn func() ([]T, error)) ([]T, error) {
	for try := 0; ; try++ {
		out, err := fn()
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < 5 {
			continue // the table changed during the dump: read again
		}
		return out, err
	}
}

func (v *soakHostView) parseIptablesSave(save string) {
	table := ""
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":cx-"):
			v.chains[table+"/"+strings.Fields(line[1:])[0]] = true
		case strings.HasPrefix(line, "-A cx-"):
			v.rules++
			f := strings.Fields(line)
			chain := f[1]
			if table == "filter" && strings.HasPrefix(chain, "cx-tw-") {
				for i := 2; i+1 < len(f); i++ {
					if (f[i] == "-j" || f[i] == "-g") && strings.HasPrefix(f[i+1], "cx-pi-") {
						v.policyJump[chain] = true
					}
				}
			}
		}
	}
}

func (v *soakHostView) parseIpsetSave(save string) {
	for _, line := range strings.Split(save, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[1], "cx-") {
			continue
		}
		switch f[0] {
		case "create":
			if v.sets[f[1]] == nil {
				v.sets[f[1]] = map[string]bool{}
			}
		case "add":
			if len(f) >= 3 {
				if v.sets[f[1]] == nil {
					v.sets[f[1]] = map[string]bool{}
				}
				// "10.244.0.5", "10.244.0.5/32" or "10.244.0.5,cx0123456789a"
				addr, iface, hasIface := strings.Cut(f[2], ",")
				m := strings.TrimSuffix(addr, "/32")
				if hasIface {
					m += "," + iface
				}
				v.sets[f[1]][m] = true
			}
		}
	}
}

// chainsWithPrefix lists the filter chains whose names start with p.
func (v *soakHostView) chainsWithPrefix(p string) map[string]bool {
	out := map[string]bool{}
	for tc := range v.chains {
		if c, ok := strings.CutPrefix(tc, "filter/"); ok && strings.HasPrefix(c, p) {
			out[c] = true
		}
	}
	return out
}

// soakCounts are the sizes of what a host holds, compared at the end with
// those before the churn started: whatever the churn made must be gone.
type soakCounts struct {
	Links, WLRoutes, Blackholes, Learned, Chains, Rules, Sets, Members int
}

func (v *soakHostView) counts() soakCounts {
	c := soakCounts{Links: len(v.links), WLRoutes: len(v.wlRoutes), Blackholes: len(v.blackholes),
		Learned: len(v.learned), Chains: len(v.chains), Rules: v.rules, Sets: len(v.sets)}
	for _, m := range v.sets {
		c.Members += len(m)
	}
	return c
}

func (c soakCounts) String() string {
	return fmt.Sprintf("links %d, wl routes %d, blackholes %d, learned %d, chains %d, rules %d, sets %d (%d members)",
		c.Links, c.WLRoutes, c.Blackholes, c.Learned, c.Chains, c.Rules, c.Sets, c.Members)
}

// soakSetDiff describes how got differs from want ("" when equal).
func soakSetDiff[K comparable](what string, got, want map[K]bool) string {
	var extra, missing []string
	for k := range got {
		if !want[k] {
			extra = append(extra, fmt.Sprint(k))
		}
	}
	for k := range want {
		if !got[k] {
			missing = append(missing, fmt.Sprint(k))
		}
	}
	if len(extra) == 0 && len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: %d present, %d expected; leaked/extra %s; missing %s", what, len(got), len(want), soakList(extra), soakList(missing))
}

func soakList(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	if len(s) > 6 {
		return fmt.Sprintf("[%s ... and %d more]", strings.Join(s[:6], " "), len(s)-6)
	}
	return "[" + strings.Join(s, " ") + "]"
}
