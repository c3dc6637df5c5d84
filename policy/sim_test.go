package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// This file is a small interpreter of the iptables rules this package
// renders: enough of iptables to evaluate a packet through the chains
// (interfaces with '+', addresses, sets, protocol, ports, ICMP, conntrack
// state, rpfilter, marks, jumps, gotos, RETURN, ACCEPT, DROP, LOG). It
// refuses anything it does not understand, so a rendering change that the
// simulator does not model fails loudly instead of being skipped.

type simPacket struct {
	family       Family
	inIf, outIf  string // "" when the host sends or receives it
	src, dst     netip.Addr
	proto        int
	sport, dport int
	icmpType     int
	icmpCode     int
	ctState      string // NEW, ESTABLISHED, RELATED, INVALID
	mark         uint32
}

type verdict int

const (
	vReturn verdict = iota
	vAccept
	vDrop
)

func (v verdict) String() string { return [...]string{"RETURN", "ACCEPT", "DROP"}[v] }

type simRule struct {
	line    string
	matches []func(p *simPacket) bool
	target  string // ACCEPT, DROP, RETURN, LOG, MARK, MASQUERADE or a chain
	isGoto  bool
	markVal uint32
	markMsk uint32
}

type simTable map[string][]*simRule

// simRouter answers rpfilter: the interface the route to an address leaves by.
type simRouter func(a netip.Addr) string

type sim struct {
	tables map[Table]simTable
	sets   map[string]*IPSet
	route  simRouter
	steps  int
}

func newSim(r *Rendered, f Family, route simRouter) (*sim, error) {
	s := &sim{tables: map[Table]simTable{}, sets: map[string]*IPSet{}, route: route}
	for _, set := range r.Sets() {
		if set.Family == f {
			s.sets[set.Name] = set
		}
	}
	for _, t := range tables {
		st := simTable{}
		for _, c := range r.Chains(f, t) {
			st[c.Name] = []*simRule{}
			for _, l := range c.Lines {
				rule, err := s.parseRule(l)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", l, err)
				}
				st[c.Name] = append(st[c.Name], rule)
			}
		}
		s.tables[t] = st
	}
	// Every jump target and set must exist.
	for t, st := range s.tables {
		for name, rules := range st {
			for _, r := range rules {
				switch r.target {
				case "ACCEPT", "DROP", "RETURN", "LOG", "MARK", "MASQUERADE":
				default:
					if _, ok := st[r.target]; !ok {
						return nil, fmt.Errorf("%s/%s: jump to missing chain %s", t, name, r.target)
					}
				}
			}
		}
	}
	return s, nil
}

// splitArgs splits a rule like a shell would, honouring double quotes.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, has := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			inQ = !inQ
			has = true
		case c == ' ' && !inQ:
			if has {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteByte(c)
			has = true
		}
	}
	if has {
		out = append(out, cur.String())
	}
	return out
}

func ifaceMatch(pattern, name string) bool {
	if strings.HasSuffix(pattern, "+") {
		return name != "" && strings.HasPrefix(name, pattern[:len(pattern)-1])
	}
	return name == pattern
}

func (s *sim) parseRule(line string) (*simRule, error) {
	args := splitArgs(line)
	if len(args) < 2 || args[0] != "-A" {
		return nil, fmt.Errorf("not an -A rule")
	}
	r := &simRule{line: line}
	seen := map[string]bool{} // iptables takes these once per rule
	neg := false
	add := func(m func(p *simPacket) bool) {
		n := neg
		r.matches = append(r.matches, func(p *simPacket) bool { return m(p) != n })
		neg = false
	}
	for i := 2; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs an argument", a)
			}
			i++
			return args[i], nil
		}
		switch a {
		case "!":
			neg = true
		case "-m":
			if _, err := next(); err != nil {
				return nil, err
			}
		case "-i", "-o":
			v, err := next()
			if err != nil {
				return nil, err
			}
			in := a == "-i"
			add(func(p *simPacket) bool {
				if in {
					return ifaceMatch(v, p.inIf)
				}
				return ifaceMatch(v, p.outIf)
			})
		case "-s", "-d":
			if seen[a] {
				return nil, fmt.Errorf("multiple %s flags not allowed", a)
			}
			seen[a] = true
			v, err := next()
			if err != nil {
				return nil, err
			}
			pr, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, err
			}
			src := a == "-s"
			add(func(p *simPacket) bool {
				if src {
					return pr.Contains(p.src)
				}
				return pr.Contains(p.dst)
			})
		case "-p":
			if seen[a] {
				return nil, fmt.Errorf("multiple -p flags not allowed")
			}
			seen[a] = true
			v, err := next()
			if err != nil {
				return nil, err
			}
			num, err := protoNumber(v)
			if err != nil {
				return nil, err
			}
			add(func(p *simPacket) bool { return p.proto == num })
		case "--ctstate":
			v, err := next()
			if err != nil {
				return nil, err
			}
			states := strings.Split(v, ",")
			add(func(p *simPacket) bool {
				for _, st := range states {
					if st == p.ctState {
						return true
					}
				}
				return false
			})
		case "--invert": // rpfilter --invert: the reverse route is not the input interface
			if len(r.matches) == 0 && !strings.Contains(line, "rpfilter") {
				return nil, fmt.Errorf("--invert outside rpfilter")
			}
			add(func(p *simPacket) bool { return s.route(p.src) != p.inIf })
		case "--mark":
			v, err := next()
			if err != nil {
				return nil, err
			}
			val, msk, err := parseMark(v)
			if err != nil {
				return nil, err
			}
			add(func(p *simPacket) bool { return p.mark&msk == val })
		case "--match-set":
			name, err := next()
			if err != nil {
				return nil, err
			}
			dir, err := next()
			if err != nil {
				return nil, err
			}
			set, ok := s.sets[name]
			if !ok {
				return nil, fmt.Errorf("set %s does not exist", name)
			}
			m, err := setMatcher(set, dir)
			if err != nil {
				return nil, fmt.Errorf("set %s: %w", name, err)
			}
			add(m)
		case "--dports", "--sports":
			v, err := next()
			if err != nil {
				return nil, err
			}
			ranges, err := parsePortList(v)
			if err != nil {
				return nil, err
			}
			dst := a == "--dports"
			add(func(p *simPacket) bool {
				port := p.sport
				if dst {
					port = p.dport
				}
				for _, rg := range ranges {
					if port >= rg[0] && port <= rg[1] {
						return true
					}
				}
				return false
			})
		case "--icmp-type", "--icmpv6-type":
			v, err := next()
			if err != nil {
				return nil, err
			}
			ts, cs, hasCode := strings.Cut(v, "/")
			typ, err := strconv.Atoi(ts)
			if err != nil {
				return nil, err
			}
			code := -1
			if hasCode {
				if code, err = strconv.Atoi(cs); err != nil {
					return nil, err
				}
			}
			add(func(p *simPacket) bool { return p.icmpType == typ && (code < 0 || p.icmpCode == code) })
		case "--comment":
			if _, err := next(); err != nil {
				return nil, err
			}
		case "-j", "-g":
			v, err := next()
			if err != nil {
				return nil, err
			}
			r.target, r.isGoto = v, a == "-g"
			switch v {
			case "LOG":
				if i+2 >= len(args) || args[i+1] != "--log-prefix" {
					return nil, fmt.Errorf("LOG without --log-prefix")
				}
				i += 2
			case "MARK":
				if i+2 >= len(args) || args[i+1] != "--set-xmark" {
					return nil, fmt.Errorf("MARK without --set-xmark")
				}
				val, msk, err := parseMark(args[i+2])
				if err != nil {
					return nil, err
				}
				r.markVal, r.markMsk = val, msk
				i += 2
			}
		default:
			return nil, fmt.Errorf("simulator does not know %q", a)
		}
	}
	if r.target == "" {
		return nil, fmt.Errorf("rule without a target")
	}
	return r, nil
}

// setMatcher is the set match: the direction flags name, per dimension of
// the set's type, which address (src, dst) and for an interface dimension
// which interface (src: incoming, dst: outgoing) to look up.
func setMatcher(set *IPSet, flags string) (func(p *simPacket) bool, error) {
	dims := strings.Split(flags, ",")
	for _, d := range dims {
		if d != "src" && d != "dst" {
			return nil, fmt.Errorf("direction %q", flags)
		}
	}
	var want int
	switch set.Type {
	case setTypeNet:
		want = 1
	case setTypeNetIface:
		want = 2
	case setTypeIPPort:
		return portSetMatcher(set, dims)
	default:
		return nil, fmt.Errorf("simulator does not know set type %q", set.Type)
	}
	if len(dims) != want {
		return nil, fmt.Errorf("%s takes %d direction flags, got %q", set.Type, want, flags)
	}
	return func(p *simPacket) bool {
		a := p.src
		if dims[0] == "dst" {
			a = p.dst
		}
		iface := ""
		if len(dims) == 2 {
			iface = p.inIf
			if dims[1] == "dst" {
				iface = p.outIf
			}
		}
		for m := range set.Members {
			if m.Iface == iface && m.Net.Contains(a) {
				return true
			}
		}
		return false
	}, nil
}

func protoNumber(v string) (int, error) {
	switch v {
	case "tcp":
		return protoTCP, nil
	case "udp":
		return protoUDP, nil
	case "sctp":
		return protoSCTP, nil
	case "icmp":
		return protoICMP, nil
	case "ipv6-icmp":
		return protoICMPv6, nil
	}
	return strconv.Atoi(v)
}

func parseMark(v string) (val, msk uint32, err error) {
	vs, ms, ok := strings.Cut(v, "/")
	if !ok {
		return 0, 0, fmt.Errorf("mark %q without mask", v)
	}
	a, err1 := strconv.ParseUint(vs, 0, 32)
	b, err2 := strconv.ParseUint(ms, 0, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bad mark %q", v)
	}
	return uint32(a), uint32(b), nil
}

func parsePortList(v string) ([][2]int, error) {
	var out [][2]int
	for _, part := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, err
			}
		}
		out = append(out, [2]int{a, b})
	}
	if len(out) > multiportMax {
		return nil, fmt.Errorf("multiport with %d entries", len(out))
	}
	return out, nil
}

// evalChain runs a packet through a chain; trace collects the rules that
// matched (for failure messages).
func (s *sim) evalChain(t Table, name string, p *simPacket, trace *[]string) verdict {
	s.steps++
	if s.steps > 100000 {
		panic("simulator: runaway evaluation (a jump loop?)")
	}
	for _, r := range s.tables[t][name] {
		ok := true
		for _, m := range r.matches {
			if !m(p) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		*trace = append(*trace, r.line)
		switch r.target {
		case "ACCEPT", "MASQUERADE":
			return vAccept
		case "DROP":
			return vDrop
		case "RETURN":
			return vReturn
		case "LOG":
		case "MARK":
			p.mark = p.mark&^r.markMsk | r.markVal
		default:
			v := s.evalChain(t, r.target, p, trace)
			if r.isGoto || v != vReturn {
				return v
			}
		}
	}
	return vReturn
}

// hook runs the built-in chain's single jump into our chain: a RETURN
// falls through to the built-in chain's policy (ACCEPT here).
func (s *sim) hook(t Table, chain string, p *simPacket, trace *[]string) bool {
	return s.evalChain(t, chain, p, trace) != vDrop
}

// forward is the path of a routed packet: raw PREROUTING, then filter
// FORWARD.
func (s *sim) forward(p simPacket) (bool, []string) {
	var trace []string
	s.steps = 0
	if !s.hook(TableRaw, chainPrerouting, &p, &trace) {
		return false, trace
	}
	return s.hook(TableFilter, chainForward, &p, &trace), trace
}

// input is the path of a packet to the host itself.
func (s *sim) input(p simPacket) (bool, []string) {
	var trace []string
	s.steps = 0
	if !s.hook(TableRaw, chainPrerouting, &p, &trace) {
		return false, trace
	}
	return s.hook(TableFilter, chainInput, &p, &trace), trace
}

// output is the path of a packet the host sends: filter OUTPUT.
func (s *sim) output(p simPacket) (bool, []string) {
	var trace []string
	s.steps = 0
	return s.hook(TableFilter, chainOutput, &p, &trace), trace
}

// masquerade reports whether nat POSTROUTING masquerades the packet.
func (s *sim) masquerade(p simPacket) bool {
	var trace []string
	s.steps = 0
	return s.evalChain(TableNAT, chainPostrouting, &p, &trace) == vAccept
}

func (p simPacket) String() string {
	s := fmt.Sprintf("IPv%d %s %s->%s in=%q out=%q proto=%d", p.family, p.ctState, p.src, p.dst, p.inIf, p.outIf, p.proto)
	if protoHasPorts(p.proto) {
		s += fmt.Sprintf(" sport=%d dport=%d", p.sport, p.dport)
	}
	if p.proto == protoICMP || p.proto == protoICMPv6 {
		s += fmt.Sprintf(" icmp=%d/%d", p.icmpType, p.icmpCode)
	}
	return s
}

// portSetMatcher matches hash:ip,port sets: the address and the port of
// the directions given, and the packet's protocol.
func portSetMatcher(set *IPSet, dims []string) (func(p *simPacket) bool, error) {
	if len(dims) != 2 || dims[0] != dims[1] {
		return nil, fmt.Errorf("%s wants src,src or dst,dst, got %v", set.Type, dims)
	}
	return func(p *simPacket) bool {
		a, port := p.src, p.sport
		if dims[0] == "dst" {
			a, port = p.dst, p.dport
		}
		for m := range set.Members {
			if m.Net.Contains(a) && int(m.Proto) == p.proto && int(m.Port) == port {
				return true
			}
		}
		return false
	}, nil
}
