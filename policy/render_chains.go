package policy

import (
	"sort"
	"strconv"

	"github.com/calyx-net/calyx/datastore"
)

// marks holds the match and targets for the accept bit, rendered once.
type marks struct {
	match, set, clear string
}

func newMarks(mark uint32) marks {
	m := hex(mark) + "/" + hex(mark)
	return marks{
		match: "-m mark --mark " + m,
		set:   "-j MARK --set-xmark " + m,
		clear: "-j MARK --set-xmark 0x0/" + hex(mark),
	}
}

func hex(v uint32) string { return "0x" + strconv.FormatUint(uint64(v), 16) }

// icmpv6Essentials are the neighbour discovery and MLD types a workload
// must be able to send to its host for IPv6 to work at all.
var icmpv6Essentials = []int{130, 131, 132, 133, 135, 136, 143}

// icmpv6FromWorkloadDropped are router advertisements (134) and redirects
// (137): a workload that sent them could make itself the host's router.
var icmpv6FromWorkloadDropped = []int{134, 137}

// renderStatic renders the top-level chains of one family, by table.
func renderStatic(cfg *Config, f Family) map[Table][]*Chain {
	wl := cfg.InterfacePrefix + "+"
	in, out := "-i "+wl, "-o "+wl

	pre := newChain(chainPrerouting)
	// rpfilter in raw, before conntrack: a workload may only send from
	// addresses routed back to its own interface (its /32s), and a spoofed
	// packet never reaches the ESTABLISHED shortcut in filter.
	pre.add(in+" -m rpfilter --invert", "-j DROP", "anti-spoofing")

	post := newChain(chainPostrouting)
	post.add("-m set --match-set "+familySetName(setPoolsMasq, f)+" src -m set ! --match-set "+
		familySetName(setPoolsAll, f)+" dst", "-j MASQUERADE", "natOutgoing")

	fwd := newChain(chainForward)
	fwd.add(in+" -m conntrack --ctstate INVALID", "-j DROP", "")
	fwd.add(out+" -m conntrack --ctstate INVALID", "-j DROP", "")
	fwd.add(in+" -m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT", "")
	fwd.add(out+" -m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT", "")
	fwd.add(in, "-j "+chainFromDisp, "workload egress policy")
	fwd.add(out, "-j "+chainToDisp, "workload ingress policy")
	fwd.add(in, "-j ACCEPT", "allowed by policy")
	fwd.add(out, "-j ACCEPT", "allowed by policy")

	// Workload to host: the workload's egress policy first, then the
	// endpoint-to-host action. No failsafe port is open to workloads
	// (failsafes are for traffic from outside): a pod under egress
	// default-deny reaches neither SSH nor etcd nor BGP on its host.
	input := newChain(chainInput)
	input.add(in+" -m conntrack --ctstate INVALID", "-j DROP", "")
	input.add(in+" -m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT", "")
	if f == V6 {
		// A workload is never the host's router, and never redirects it.
		for _, t := range icmpv6FromWorkloadDropped {
			input.add(in+" -p ipv6-icmp -m icmp6 --icmpv6-type "+strconv.Itoa(t), "-j DROP", "router advertisement or redirect from a workload")
		}
		for _, t := range icmpv6Essentials {
			input.add(in+" -p ipv6-icmp -m icmp6 --icmpv6-type "+strconv.Itoa(t), "-j ACCEPT", "ndp")
		}
	}
	input.add(in, "-j "+chainFromDisp, "workload egress policy")
	switch cfg.EndpointToHost {
	case HostActionAccept:
		input.add(in, "-j ACCEPT", "workload to host")
	case HostActionDrop:
		input.add(in, "-j DROP", "workload to host")
	}

	output := newChain(chainOutput)
	if cfg.HostToWorkloadPolicy {
		output.add(out+" -m conntrack --ctstate INVALID", "-j DROP", "")
		output.add(out+" -m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT", "")
		output.add(out, "-j "+chainToDisp, "workload ingress policy")
		output.add(out, "-j ACCEPT", "host to workload")
	} else {
		output.add(out, "-j RETURN", "host to workload is not policed")
	}

	return map[Table][]*Chain{
		TableRaw:    {pre.done()},
		TableNAT:    {post.done()},
		TableFilter: {fwd.done(), input.done(), output.done()},
	}
}

// renderDispatch renders the chains that send a packet to its endpoint's
// chain by interface name. ifaces (the selected local endpoints) must be
// sorted. Open endpoints are matched first, by one rule on the open set;
// their RETURN is what their empty endpoint chain would do. Both chains end
// in a DROP for any workload interface they do not know: a new veth is
// blocked until it is in the open set or has its chains (fail closed).
func renderDispatch(cfg *Config, f Family, ifaces []string, dir direction) []*Chain {
	root, flag, dirs := chainFromDisp, "-i ", "src,src"
	if dir == ingress {
		root, flag, dirs = chainToDisp, "-o ", "dst,dst"
	}
	open := "-m set --match-set " + familySetName(setOpenWL, f) + " " + dirs
	prefix := cfg.InterfacePrefix
	if len(ifaces) <= cfg.DispatchSplit {
		b := newChain(root)
		b.add(open, "-j RETURN", "open endpoint")
		for _, ifname := range ifaces {
			b.add(flag+ifname, "-g "+endpointChainName(ifname, dir), "")
		}
		b.add(flag+prefix+"+", "-j DROP", "unknown interface")
		return []*Chain{b.done()}
	}
	// A two-level tree keyed by the first character after the prefix keeps
	// the linear scan short: 16 branches for hex-named interfaces.
	var out []*Chain
	rootB := newChain(root)
	rootB.add(open, "-j RETURN", "open endpoint")
	for i := 0; i < len(ifaces); {
		c := ifaces[i][len(prefix)]
		j := i
		for j < len(ifaces) && ifaces[j][len(prefix)] == c {
			j++
		}
		sub := root + "-" + string(c)
		group := prefix + string(c) + "+"
		rootB.add(flag+group, "-g "+sub, "")
		b := newChain(sub)
		for _, ifname := range ifaces[i:j] {
			b.add(flag+ifname, "-g "+endpointChainName(ifname, dir), "")
		}
		b.add(flag+group, "-j DROP", "unknown interface")
		out = append(out, b.done())
		i = j
	}
	rootB.add(flag+prefix+"+", "-j DROP", "unknown interface")
	return append([]*Chain{rootB.done()}, out...)
}

// renderEndpointChain renders cx-tw-<if> or cx-fw-<if>: the policies that
// apply to the endpoint in that direction, in order. No policy: an empty
// chain (open). Else the first policy that allows returns, and whatever no
// policy allowed is dropped.
func renderEndpointChain(cfg *Config, ifname string, dir direction, policies []string) *Chain {
	b := newChain(endpointChainName(ifname, dir))
	if len(policies) == 0 {
		return b.done()
	}
	b.add("", cfg.marks.clear, "")
	for _, name := range policies {
		b.add("", "-j "+policyChainName(name, dir), trimNote("policy "+name))
		b.add(cfg.marks.match, "-j RETURN", "")
	}
	b.add("", "-j DROP", "default deny")
	return b.done()
}

// renderPolicyChain renders one policy's rules for one direction and family.
// Allow sets the accept mark; a RETURN on the mark is placed before any
// later rule that is not an Allow, so that the first Allow or Deny wins.
// Pass returns without the mark (the endpoint chain goes on with the next
// policy); Log logs and goes on.
func renderPolicyChain(cfg *Config, cp *compiledPolicy, dir direction, f Family) *Chain {
	b := newChain(policyChainName(cp.name, dir))
	pendingReturn := false
	for i := range cp.rules[dir] {
		r := &cp.rules[dir][i]
		matches := ruleMatches(r, f)
		if len(matches) == 0 {
			continue
		}
		if pendingReturn && r.action != datastore.ActionAllow {
			b.add(cfg.marks.match, "-j RETURN", "")
			pendingReturn = false
		}
		var action string
		switch r.action {
		case datastore.ActionAllow:
			action = cfg.marks.set
			pendingReturn = true
		case datastore.ActionDeny:
			action = "-j DROP"
		case datastore.ActionPass:
			action = "-j RETURN"
		case datastore.ActionLog:
			action = `-j LOG --log-prefix "` + logPrefix(cp.name) + `"`
		}
		note := trimNote(cp.name + " " + dir.String() + "[" + strconv.Itoa(i) + "]")
		for _, m := range matches {
			b.add(m, action, note)
		}
	}
	return b.done()
}

// logPrefixMax is the LOG target's prefix limit (29 characters).
const logPrefixMax = 29

// logPrefix is "cx-<policy> ", the name cut to fit.
func logPrefix(policy string) string {
	p := "cx-" + safeText(policy)
	if len(p) > logPrefixMax-1 {
		p = p[:logPrefixMax-1]
	}
	return p + " "
}

// sortedPolicies orders the policies that apply to an endpoint in one
// direction and returns their names.
func sortedPolicies(ps []*compiledPolicy, dir direction) []string {
	sel := make([]*compiledPolicy, 0, len(ps))
	for _, p := range ps {
		if p.applies[dir] {
			sel = append(sel, p)
		}
	}
	sort.Slice(sel, func(i, j int) bool { return policyLess(sel[i], sel[j]) < 0 })
	names := make([]string, len(sel))
	for i, p := range sel {
		names[i] = p.name
	}
	return names
}

// sortedIfaces returns the interface names in order (dispatch input).
func sortedIfaces(names []string) []string {
	out := append([]string(nil), names...)
	sort.Strings(out)
	return out
}
