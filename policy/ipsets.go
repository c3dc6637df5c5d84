package policy

import (
	"net/netip"
	"slices"
	"strings"
)

// IPSet is one desired hash:net set. Members are never modified in place:
// a change replaces the map and bumps gen, so the programmer can tell an
// unchanged set by its generation alone.
type IPSet struct {
	Name    string
	Family  Family
	Members map[netip.Prefix]struct{}
	gen     uint64
}

// setMaxElem leaves room for large clusters (the kernel default is 65536).
const setMaxElem = "1048576"

func ipsetFamily(f Family) string {
	if f == V6 {
		return "inet6"
	}
	return "inet"
}

// writeCreate writes the create line for a set.
func writeCreate(sb *strings.Builder, name string, f Family) {
	sb.WriteString("create ")
	sb.WriteString(name)
	sb.WriteString(" hash:net family ")
	sb.WriteString(ipsetFamily(f))
	sb.WriteString(" maxelem ")
	sb.WriteString(setMaxElem)
	sb.WriteByte('\n')
}

// writeMember writes "add|del <set> <member>", a host prefix as a bare
// address as ipset save prints it.
func writeMember(sb *strings.Builder, verb, name string, p netip.Prefix) {
	sb.WriteString(verb)
	sb.WriteByte(' ')
	sb.WriteString(name)
	sb.WriteByte(' ')
	if p.IsSingleIP() {
		sb.WriteString(p.Addr().String())
	} else {
		sb.WriteString(p.String())
	}
	sb.WriteByte('\n')
}

// sortedMembers lists a set's members in a stable order (for golden text and
// for batches that are easy to read).
func sortedMembers(m map[netip.Prefix]struct{}) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

// RenderSets writes sets as one ipset-restore batch that creates them from
// scratch (for golden files and for the raw-restore benchmark peer).
func RenderSets(sets []*IPSet) string {
	var sb strings.Builder
	for _, s := range sets {
		writeCreate(&sb, s.Name, s.Family)
		for _, p := range sortedMembers(s.Members) {
			writeMember(&sb, "add", s.Name, p)
		}
	}
	return sb.String()
}
