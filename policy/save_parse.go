package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// kernelTable is what iptables-save shows of one table that concerns us:
// our chains with the hash of each rule, the hooks into them, and our rules
// in built-in chains that are not (or no longer) the wanted hooks.
type kernelTable struct {
	chains map[string][]string // "" for a rule without our comment
	hooks  map[hook]int
	stale  []string // "-D <builtin> ..." lines that remove them
}

// parseIptablesSave reads iptables-save output, by table. It only looks at
// cx- chains and at built-in chains' rules that carry our comment; tables
// absent from the output are empty.
func parseIptablesSave(data []byte) map[Table]*kernelTable {
	out := map[Table]*kernelTable{}
	for _, t := range tables {
		out[t] = &kernelTable{chains: map[string][]string{}, hooks: map[hook]int{}}
	}
	var kt *kernelTable // nil in tables we do not use (mangle, security)
	var t Table
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) > 1 && line[0] == '*' {
			t = Table(line[1:])
			kt = out[t]
			continue
		}
		if kt == nil {
			continue
		}
		switch {
		case len(line) > 1 && line[0] == ':' && bytes.HasPrefix(line[1:], []byte(ownPrefix)):
			name := string(line[1:])
			if i := strings.IndexByte(name, ' '); i >= 0 {
				name = name[:i]
			}
			if _, ok := kt.chains[name]; !ok {
				kt.chains[name] = []string{}
			}
		case bytes.HasPrefix(line, []byte("-A ")):
			rest := line[3:]
			sp := bytes.IndexByte(rest, ' ')
			if sp < 0 {
				continue
			}
			chain, spec := string(rest[:sp]), string(rest[sp+1:])
			if strings.HasPrefix(chain, ownPrefix) {
				kt.chains[chain] = append(kt.chains[chain], commentHash(spec))
				continue
			}
			if commentHash(spec) == "" {
				continue // someone else's rule
			}
			matched := false
			for _, hk := range hooks {
				if hk.table == t && hk.builtin == chain && spec == hookLine(hk) {
					if kt.hooks[hk] == 0 {
						matched = true
					}
					kt.hooks[hk]++
				}
			}
			if !matched {
				kt.stale = append(kt.stale, "-D "+chain+" "+spec)
			}
		}
	}
	return out
}

// commentHash returns the hash in our comment ("cx:<hash>[ note]"), or "".
func commentHash(spec string) string {
	i := strings.Index(spec, "--comment ")
	for i >= 0 {
		v := spec[i+len("--comment "):]
		v = strings.TrimPrefix(v, `"`)
		if strings.HasPrefix(v, commentPrefix) {
			v = v[len(commentPrefix):]
			end := strings.IndexAny(v, `" `)
			if end >= 0 {
				v = v[:end]
			}
			return v
		}
		next := strings.Index(spec[i+1:], "--comment ")
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return ""
}

// kernelSet is one of our sets as ipset save shows it.
type kernelSet struct {
	typ     string
	family  Family
	members map[SetMember]struct{}
}

// parseMember reads one entry of a set of type typ as ipset save prints
// it: "10.0.0.1", "10.0.0.0/8", and for hash:net,iface "fe80::/10,cx12".
func parseMember(typ, s string) (SetMember, error) {
	var m SetMember
	if typ == setTypeIPPort {
		return parsePortMember(s)
	}
	if typ == setTypeNetIface {
		i := strings.LastIndexByte(s, ',')
		if i < 0 {
			return m, fmt.Errorf("%q has no interface", s)
		}
		s, m.Iface = s[:i], s[i+1:]
	}
	p, err := parsePrefix(s)
	m.Net = p
	return m, err
}

// parseIpsetSave reads `ipset save` output and keeps our sets. Members of
// types we never create are not read: plan refuses such sets by type.
func parseIpsetSave(data []byte) (map[string]*kernelSet, error) {
	sets := map[string]*kernelSet{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || !strings.HasPrefix(f[1], ownPrefix) {
			continue
		}
		switch f[0] {
		case "create":
			ks := &kernelSet{typ: f[2], family: V4, members: map[SetMember]struct{}{}}
			for i := 3; i+1 < len(f); i++ {
				if f[i] == "family" && f[i+1] == "inet6" {
					ks.family = V6
				}
			}
			sets[f[1]] = ks
		case "add":
			ks := sets[f[1]]
			if ks == nil || (ks.typ != setTypeNet && ks.typ != setTypeNetIface && ks.typ != setTypeIPPort) {
				continue
			}
			m, err := parseMember(ks.typ, f[2])
			if err != nil {
				return nil, fmt.Errorf("ipset save: set %s: member %q: %w", f[1], f[2], err)
			}
			ks.members[m] = struct{}{}
		}
	}
	return sets, sc.Err()
}

// parsePortMember reads a hash:ip,port entry: "10.0.0.1,tcp:80".
func parsePortMember(s string) (SetMember, error) {
	var m SetMember
	i := strings.LastIndexByte(s, ',')
	if i < 0 {
		return m, fmt.Errorf("%q has no protocol:port", s)
	}
	addr, pp := s[:i], s[i+1:]
	proto, port, ok := strings.Cut(pp, ":")
	if !ok {
		return m, fmt.Errorf("%q has no protocol:port", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return m, fmt.Errorf("%q: bad port", s)
	}
	switch proto {
	case "tcp":
		m.Proto = protoTCP
	case "udp":
		m.Proto = protoUDP
	case "sctp":
		m.Proto = protoSCTP
	default:
		return m, fmt.Errorf("%q: protocol %q is not tcp, udp or sctp", s, proto)
	}
	m.Port = uint16(n)
	m.Net, err = parsePrefix(addr)
	return m, err
}
