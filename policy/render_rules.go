package policy

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/selector"
)

// multiportMax is how many ports one multiport match takes (a range counts
// twice); validation counts the rules a policy rule becomes with the same.
const multiportMax = datastore.MultiportMax

// ruleMatches renders the match part of a rule for one family. A rule that
// needs several iptables rules (more ports than one multiport match holds)
// gives several strings, any of which matching means the rule matches. It
// returns nil when the rule cannot match packets of that family.
func ruleMatches(r *compiledRule, f Family) []string {
	if !r.inFamily(f) {
		return nil
	}
	var sb strings.Builder
	if r.proto >= 0 {
		sb.WriteString("-p ")
		sb.WriteString(protoName(r.proto))
	}
	writeEntity(&sb, &r.src, f, "src", "-s ")
	writeEntity(&sb, &r.dst, f, "dst", "-d ")
	if r.icmpType >= 0 {
		if f == V4 {
			sb.WriteString(" -m icmp --icmp-type ")
		} else {
			sb.WriteString(" -m icmp6 --icmpv6-type ")
		}
		sb.WriteString(strconv.Itoa(r.icmpType))
		if r.icmpCode >= 0 {
			sb.WriteByte('/')
			sb.WriteString(strconv.Itoa(r.icmpCode))
		}
	}
	for _, np := range chunkPorts(r.src.notPort) {
		sb.WriteString(" -m multiport ! --sports ")
		sb.WriteString(np)
	}
	for _, np := range chunkPorts(r.dst.notPort) {
		sb.WriteString(" -m multiport ! --dports ")
		sb.WriteString(np)
	}
	forEachNamedPort(r, func(sel *selector.Selector, name, dirs string, negate bool) {
		if negate {
			writeSetMatch(&sb, portSetName(portSetID(sel, r.proto, name), f), dirs, true)
		}
	})
	base := strings.TrimPrefix(sb.String(), " ")

	// Positive port lists OR their members: one rule per chunk or named
	// port, and the product when both source and destination need several.
	out := []string{base}
	for _, side := range []struct {
		e    *compiledEntity
		flag string
		dirs string
	}{{&r.src, "--sports ", "src,src"}, {&r.dst, "--dports ", "dst,dst"}} {
		var alts []string
		for _, c := range chunkPorts(side.e.ports) {
			alts = append(alts, "-m multiport "+side.flag+c)
		}
		for _, name := range side.e.named {
			var nb strings.Builder
			writeSetMatch(&nb, portSetName(portSetID(side.e.sel, r.proto, name), f), side.dirs, false)
			alts = append(alts, strings.TrimPrefix(nb.String(), " "))
		}
		if len(alts) == 0 {
			continue
		}
		next := make([]string, 0, len(out)*len(alts))
		for _, prefix := range out {
			for _, s := range alts {
				if prefix != "" {
					s = prefix + " " + s
				}
				next = append(next, s)
			}
		}
		out = next
	}
	return out
}

// writeEntity writes the address part of one side: nets, notNets and the
// selector sets. flag is "-s " or "-d ", dirWord "src" or "dst".
func writeEntity(sb *strings.Builder, e *compiledEntity, f Family, dirWord, flag string) {
	pos, neg := entityNets(e, f)
	if pos.inline {
		sb.WriteByte(' ')
		sb.WriteString(flag)
		sb.WriteString(pos.nets[0].String())
	} else if pos.needsSet() {
		writeSetMatch(sb, netSetName(netsKey(pos.nets), f), dirWord, false)
	}
	if neg.inline {
		sb.WriteString(" ! ")
		sb.WriteString(flag)
		sb.WriteString(neg.nets[0].String())
	} else if neg.needsSet() {
		writeSetMatch(sb, netSetName(netsKey(neg.nets), f), dirWord, true)
	}
	if e.sel != nil {
		writeSetMatch(sb, selectorSetName(e.sel.UniqueID(), f), dirWord, false)
	}
	if e.notSel != nil {
		writeSetMatch(sb, selectorSetName(e.notSel.UniqueID(), f), dirWord, true)
	}
}

func writeSetMatch(sb *strings.Builder, set, dirWord string, negate bool) {
	sb.WriteString(" -m set ")
	if negate {
		sb.WriteString("! ")
	}
	sb.WriteString("--match-set ")
	sb.WriteString(set)
	sb.WriteByte(' ')
	sb.WriteString(dirWord)
}

// netsKey is the canonical text of a sorted prefix list; it names the set.
func netsKey(nets []netip.Prefix) string {
	var sb strings.Builder
	for i, p := range nets {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(p.String())
	}
	return sb.String()
}

// chunkPorts splits a port list into multiport arguments of at most 15
// ports each (a range takes two).
func chunkPorts(ports []datastore.Port) []string {
	if len(ports) == 0 {
		return nil
	}
	var out []string
	var sb strings.Builder
	used := 0
	for _, p := range ports {
		cost := 1
		if p.MinPort != p.MaxPort {
			cost = 2
		}
		if used+cost > multiportMax {
			out = append(out, sb.String())
			sb.Reset()
			used = 0
		}
		if used > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(int(p.MinPort)))
		if p.MinPort != p.MaxPort {
			sb.WriteByte(':')
			sb.WriteString(strconv.Itoa(int(p.MaxPort)))
		}
		used += cost
	}
	return append(out, sb.String())
}

// protoName is the -p argument: names iptables-save prints back, else the
// number.
func protoName(p int) string {
	switch p {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoSCTP:
		return "sctp"
	case protoICMP:
		return "icmp"
	case protoICMPv6:
		return "ipv6-icmp"
	}
	return strconv.Itoa(p)
}
