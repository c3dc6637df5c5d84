package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Set types this package creates.
const (
	setTypeNet      = "hash:net"       // addresses and CIDRs
	setTypeNetIface = "hash:net,iface" // (address or CIDR, interface) pairs: the open-endpoint sets
	setTypeIPPort   = "hash:ip,port"   // (address, protocol:port): the named-port sets
)

// SetMember is one set entry: an address or CIDR and, in hash:net,iface
// sets only, an interface name; in hash:ip,port sets a host address, a
// protocol and a port.
type SetMember struct {
	Net   netip.Prefix
	Iface string
	Proto uint8
	Port  uint16
}

func netMember(p netip.Prefix) SetMember { return SetMember{Net: p} }

// IPSet is one desired set. Members are never modified in place: a change
// replaces the map and bumps gen, so the programmer can tell an unchanged
// set by its generation alone.
type IPSet struct {
	Name    string
	Family  Family
	Type    string // setTypeNet or setTypeNetIface
	Members map[SetMember]struct{}
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
func writeCreate(sb *strings.Builder, name, typ string, f Family) {
	sb.WriteString("create ")
	sb.WriteString(name)
	sb.WriteByte(' ')
	sb.WriteString(typ)
	sb.WriteString(" family ")
	sb.WriteString(ipsetFamily(f))
	sb.WriteString(" maxelem ")
	sb.WriteString(setMaxElem)
	sb.WriteByte('\n')
}

// writeMember writes "add|del <set> <member>" as ipset save prints it: a
// host prefix as a bare address, then ",<interface>" when there is one.
func writeMember(sb *strings.Builder, verb, name string, m SetMember) {
	sb.WriteString(verb)
	sb.WriteByte(' ')
	sb.WriteString(name)
	sb.WriteByte(' ')
	if m.Net.IsSingleIP() {
		sb.WriteString(m.Net.Addr().String())
	} else {
		sb.WriteString(m.Net.String())
	}
	if m.Iface != "" {
		sb.WriteByte(',')
		sb.WriteString(m.Iface)
	}
	if m.Proto != 0 {
		sb.WriteByte(',')
		sb.WriteString(portMemberSuffix(m))
	}
	sb.WriteByte('\n')
}

// portMemberSuffix is "tcp:80" as ipset save prints a hash:ip,port entry.
func portMemberSuffix(m SetMember) string {
	return protoName(int(m.Proto)) + ":" + strconv.Itoa(int(m.Port))
}

func compareMember(a, b SetMember) int {
	if c := cmp.Compare(a.Iface, b.Iface); c != 0 {
		return c
	}
	if c := comparePrefix(a.Net, b.Net); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// sortedMembers lists a set's members in a stable order (for golden text and
// for batches that are easy to read).
func sortedMembers(m map[SetMember]struct{}) []SetMember {
	out := make([]SetMember, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, compareMember)
	return out
}

// RenderSets writes sets as one ipset-restore batch that creates them from
// scratch (for golden files and for the raw-restore benchmark peer).
func RenderSets(sets []*IPSet) string {
	var sb strings.Builder
	for _, s := range sets {
		writeCreate(&sb, s.Name, s.Type, s.Family)
		for _, p := range sortedMembers(s.Members) {
			writeMember(&sb, "add", s.Name, p)
		}
	}
	return sb.String()
}
