package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/selector"
)

// ---- direct evaluation of the policy model ------------------------------------
//
// This reads the datastore resources as they are, independently of
// compile.go and the renderers, and says what should happen to a packet.

type refModel struct {
	cfg       Config
	policies  []*datastore.Policy
	endpoints []*datastore.WorkloadEndpoint
	pools     []*datastore.IPPool
}

func mustSel(s string) *selector.Selector {
	sel, err := selector.Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

func (m *refModel) localByIface(ifname string) *datastore.WorkloadEndpoint {
	for _, w := range m.endpoints {
		if w.Spec.Node == m.cfg.NodeName && w.Spec.InterfaceName == ifname {
			return w
		}
	}
	return nil
}

func epAddrs(w *datastore.WorkloadEndpoint) []netip.Addr {
	var out []netip.Addr
	for _, n := range w.Spec.IPNetworks {
		out = append(out, netip.MustParsePrefix(n).Addr())
	}
	return out
}

// selected reports whether addr belongs to an endpoint the selector matches.
func (m *refModel) selected(sel string, addr netip.Addr) bool {
	s := mustSel(sel)
	for _, w := range m.endpoints {
		if !s.Evaluate(w.Metadata.Labels) {
			continue
		}
		for _, a := range epAddrs(w) {
			if a == addr {
				return true
			}
		}
	}
	return false
}

func netsContain(nets []string, a netip.Addr) bool {
	for _, n := range nets {
		var p netip.Prefix
		if strings.Contains(n, "/") {
			p = netip.MustParsePrefix(n)
		} else {
			ad := netip.MustParseAddr(n)
			p = netip.PrefixFrom(ad, ad.BitLen())
		}
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func portsContain(ports []datastore.Port, port int) bool {
	for _, p := range ports {
		if port >= int(p.MinPort) && port <= int(p.MaxPort) {
			return true
		}
	}
	return false
}

func (m *refModel) entityMatches(e *datastore.EntityRule, a netip.Addr, port int) bool {
	if e.Selector != "" && !m.selected(e.Selector, a) {
		return false
	}
	if e.NotSelector != "" && m.selected(e.NotSelector, a) {
		return false
	}
	if len(e.Nets) > 0 && !netsContain(e.Nets, a) {
		return false
	}
	if netsContain(e.NotNets, a) {
		return false
	}
	if len(e.Ports) > 0 && !portsContain(e.Ports, port) {
		return false
	}
	if len(e.NotPorts) > 0 && portsContain(e.NotPorts, port) {
		return false
	}
	return true
}

func (m *refModel) ruleMatches(r *datastore.Rule, p *simPacket) bool {
	if r.IPVersion != 0 && Family(r.IPVersion) != p.family {
		return false
	}
	if r.Protocol != nil && int(r.Protocol.Number()) != p.proto {
		return false
	}
	if r.ICMP != nil && r.ICMP.Type != nil {
		if p.icmpType != *r.ICMP.Type || (r.ICMP.Code != nil && p.icmpCode != *r.ICMP.Code) {
			return false
		}
	}
	return m.entityMatches(&r.Source, p.src, p.sport) && m.entityMatches(&r.Destination, p.dst, p.dport)
}

// allowedBy evaluates one endpoint's policies in one direction.
func (m *refModel) allowedBy(w *datastore.WorkloadEndpoint, t datastore.PolicyType, p *simPacket) bool {
	var ps []*datastore.Policy
	for _, pol := range m.policies {
		if pol.Spec.AppliesTo(t) && mustSel(pol.Spec.Selector).Evaluate(w.Metadata.Labels) {
			ps = append(ps, pol)
		}
	}
	if len(ps) == 0 {
		return true // selected by no policy: open
	}
	sort.Slice(ps, func(i, j int) bool {
		oi, oj := ps[i].Spec.Order, ps[j].Spec.Order
		switch {
		case oi != nil && oj != nil && *oi != *oj:
			return *oi < *oj
		case oi != nil && oj == nil:
			return true
		case oi == nil && oj != nil:
			return false
		}
		return ps[i].Metadata.Name < ps[j].Metadata.Name
	})
	for _, pol := range ps {
		rules := pol.Spec.Ingress
		if t == datastore.PolicyTypeEgress {
			rules = pol.Spec.Egress
		}
	rules:
		for i := range rules {
			if !m.ruleMatches(&rules[i], p) {
				continue
			}
			switch rules[i].Action {
			case datastore.ActionAllow:
				return true
			case datastore.ActionDeny:
				return false
			case datastore.ActionPass:
				break rules
			}
		}
	}
	return false // selected, nothing allowed: default deny
}

func (m *refModel) spoofed(p *simPacket) bool {
	w := m.localByIface(p.inIf)
	if w == nil {
		return strings.HasPrefix(p.inIf, "cx") // unknown workload interface: no route back
	}
	for _, a := range epAddrs(w) {
		if a == p.src {
			return false
		}
	}
	return true
}

// forward is the expected verdict for a routed packet.
func (m *refModel) forward(p simPacket) bool {
	fromWL, toWL := strings.HasPrefix(p.inIf, "cx"), strings.HasPrefix(p.outIf, "cx")
	if fromWL && m.spoofed(&p) {
		return false
	}
	if !fromWL && !toWL {
		return true // not ours
	}
	switch p.ctState {
	case "INVALID":
		return false
	case "ESTABLISHED", "RELATED":
		return true
	}
	if fromWL {
		w := m.localByIface(p.inIf)
		if w == nil || !m.allowedBy(w, datastore.PolicyTypeEgress, &p) {
			return false
		}
	}
	if toWL {
		w := m.localByIface(p.outIf)
		if w == nil || !m.allowedBy(w, datastore.PolicyTypeIngress, &p) {
			return false
		}
	}
	return true
}

// input is the expected verdict for a packet from a workload to the host.
func (m *refModel) input(p simPacket) bool {
	if m.spoofed(&p) {
		return false
	}
	switch p.ctState {
	case "INVALID":
		return false
	case "ESTABLISHED", "RELATED":
		return true
	}
	// No failsafe port for workloads: their egress policy decides, then
	// the endpoint-to-host action.
	if p.family == V6 && p.proto == protoICMPv6 {
		if p.icmpType == 134 || p.icmpType == 137 {
			return false
		}
		for _, t := range icmpv6Essentials {
			if p.icmpType == t {
				return true
			}
		}
	}
	w := m.localByIface(p.inIf)
	if w == nil || !m.allowedBy(w, datastore.PolicyTypeEgress, &p) {
		return false
	}
	return m.cfg.EndpointToHost != HostActionDrop // Return: the sim host's INPUT accepts
}

func (m *refModel) masquerade(p simPacket) bool {
	inPool := func(a netip.Addr, masqOnly bool) bool {
		for _, pl := range m.pools {
			if netip.MustParsePrefix(pl.Spec.CIDR).Contains(a) && (!masqOnly || pl.Spec.NATOutgoing) {
				return true
			}
		}
		return false
	}
	return inPool(p.src, true) && !inPool(p.dst, false)
}

// ---- random inputs -------------------------------------------------------------

var (
	genSelectors = []string{
		`app == "web"`, `app == "db"`, `app != "db"`, `has(env)`, `!has(tier)`, `env in {"prod"}`,
		`all()`, `app == "web" || env == "dev"`, `app == "api" && env == "prod"`, `env not in {"dev", "prod"}`,
	}
	genNets4  = []string{"10.244.0.0/24", "10.244.1.0/25", "192.0.2.0/24", "10.244.0.3", "0.0.0.0/0"}
	genNets6  = []string{"fd00:244::/120", "2001:db8::/32", "fd00:244::3"}
	genPorts  = []datastore.Port{{MinPort: 80, MaxPort: 80}, {MinPort: 443, MaxPort: 443}, {MinPort: 8000, MaxPort: 8010}, {MinPort: 53, MaxPort: 53}}
	genLabelV = map[string][]string{"app": {"web", "db", "api"}, "env": {"prod", "dev"}, "tier": {"a"}}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func genEntity(r *rand.Rand, hasPorts bool) datastore.EntityRule {
	var e datastore.EntityRule
	if r.IntN(3) == 0 {
		e.Selector = pick(r, genSelectors)
	}
	if r.IntN(6) == 0 {
		e.NotSelector = pick(r, genSelectors)
	}
	for range r.IntN(3) {
		if r.IntN(3) == 0 {
			e.Nets = append(e.Nets, pick(r, genNets6))
		} else {
			e.Nets = append(e.Nets, pick(r, genNets4))
		}
	}
	if r.IntN(6) == 0 {
		e.NotNets = append(e.NotNets, pick(r, genNets4), pick(r, genNets6))
	}
	if hasPorts {
		for range r.IntN(3) {
			e.Ports = append(e.Ports, pick(r, genPorts))
		}
		if r.IntN(5) == 0 {
			e.NotPorts = append(e.NotPorts, pick(r, genPorts))
		}
		if r.IntN(20) == 0 { // beyond one multiport match
			for p := 1000; p < 1020; p++ {
				e.Ports = append(e.Ports, datastore.Port{MinPort: uint16(p), MaxPort: uint16(p)})
			}
		}
	}
	return e
}

func genRule(r *rand.Rand) datastore.Rule {
	rule := datastore.Rule{Action: pick(r, []datastore.Action{
		datastore.ActionAllow, datastore.ActionAllow, datastore.ActionDeny, datastore.ActionPass, datastore.ActionLog})}
	protoName := pick(r, []string{"", "", "tcp", "udp", "icmp", "icmpv6"})
	if protoName != "" {
		p, _ := datastore.ParseProtocol(protoName)
		rule.Protocol = &p
	}
	hasPorts := protoName == "tcp" || protoName == "udp"
	if (protoName == "icmp" || protoName == "icmpv6") && r.IntN(2) == 0 {
		t := pick(r, []int{8, 128, 3})
		rule.ICMP = &datastore.ICMPMatch{Type: &t}
		if r.IntN(2) == 0 {
			c := 0
			rule.ICMP.Code = &c
		}
	}
	if r.IntN(8) == 0 {
		rule.IPVersion = pick(r, []int{4, 6})
		if (rule.IPVersion == 4 && protoName == "icmpv6") || (rule.IPVersion == 6 && protoName == "icmp") {
			rule.IPVersion = 0
		}
	}
	rule.Source = genEntity(r, hasPorts)
	rule.Destination = genEntity(r, hasPorts)
	return rule
}

func genModel(r *rand.Rand) *refModel {
	m := &refModel{cfg: Config{NodeName: "node-a", IPv6: true, FailsafeInbound: []ProtoPort{{"tcp", 22}}}}
	nEp := 3 + r.IntN(6)
	for i := range nEp {
		labels := map[string]string{}
		for k, vs := range genLabelV {
			if r.IntN(3) > 0 {
				labels[k] = pick(r, vs)
			}
		}
		node := "node-a"
		if r.IntN(3) == 0 {
			node = "node-b"
		}
		ips := []string{fmt.Sprintf("10.244.%d.%d/32", i%2, i+1)}
		if r.IntN(2) == 0 {
			ips = append(ips, fmt.Sprintf("fd00:244::%x/128", i+1))
		}
		m.endpoints = append(m.endpoints, &datastore.WorkloadEndpoint{
			Metadata: datastore.Metadata{Name: fmt.Sprintf("ep%d", i), Labels: labels},
			Spec:     datastore.WorkloadEndpointSpec{Node: node, InterfaceName: fmt.Sprintf("cx%011x", i), IPNetworks: ips},
		})
	}
	for i := range r.IntN(6) {
		p := &datastore.Policy{Metadata: datastore.Metadata{Name: fmt.Sprintf("pol-%d", i)}}
		p.Spec.Selector = pick(r, genSelectors)
		if r.IntN(4) > 0 {
			o := float64(r.IntN(3))
			p.Spec.Order = &o
		}
		switch r.IntN(4) {
		case 0:
			p.Spec.Types = []datastore.PolicyType{datastore.PolicyTypeIngress}
		case 1:
			p.Spec.Types = []datastore.PolicyType{datastore.PolicyTypeEgress}
		case 2:
			p.Spec.Types = []datastore.PolicyType{datastore.PolicyTypeIngress, datastore.PolicyTypeEgress}
		}
		// Without types, egress rules make it an egress policy too.
		untyped := len(p.Spec.Types) == 0
		if untyped || p.Spec.AppliesTo(datastore.PolicyTypeIngress) {
			for range r.IntN(5) {
				p.Spec.Ingress = append(p.Spec.Ingress, genRule(r))
			}
		}
		if untyped || p.Spec.AppliesTo(datastore.PolicyTypeEgress) {
			for range r.IntN(4) {
				p.Spec.Egress = append(p.Spec.Egress, genRule(r))
			}
		}
		m.policies = append(m.policies, p)
	}
	m.pools = []*datastore.IPPool{
		{Metadata: datastore.Metadata{Name: "p4"}, Spec: datastore.IPPoolSpec{CIDR: "10.244.0.0/16", NATOutgoing: true}},
		{Metadata: datastore.Metadata{Name: "p6"}, Spec: datastore.IPPoolSpec{CIDR: "fd00:244::/64"}},
	}
	return m
}

// genPacket makes a packet around the model's endpoints: mostly from or to a
// local workload, sometimes spoofed, sometimes from an unknown interface.
func genPacket(r *rand.Rand, m *refModel, f Family) simPacket {
	var addrs []netip.Addr
	for _, w := range m.endpoints {
		for _, a := range epAddrs(w) {
			if (f == V4) == a.Is4() {
				addrs = append(addrs, a)
			}
		}
	}
	outside := netip.MustParseAddr("192.0.2.7")
	if f == V6 {
		outside = netip.MustParseAddr("2001:db8::7")
		addrs = append(addrs, netip.MustParseAddr("fd00:244::99"))
	} else {
		addrs = append(addrs, netip.MustParseAddr("10.244.0.99"), netip.MustParseAddr("10.244.0.3"))
	}
	addrs = append(addrs, outside)
	p := simPacket{family: f, src: pick(r, addrs), dst: pick(r, addrs), ctState: "NEW"}
	switch r.IntN(12) {
	case 0:
		p.ctState = "ESTABLISHED"
	case 1:
		p.ctState = "INVALID"
	}
	p.inIf, p.outIf = m.ifaceOf(p.src), m.ifaceOf(p.dst)
	switch r.IntN(15) {
	case 0: // spoofed: from some local interface whatever the source
		p.inIf = fmt.Sprintf("cx%011x", r.IntN(len(m.endpoints)))
	case 1: // a veth whose endpoint is not known yet
		p.outIf = "cxffffffffff0"
	}
	icmp := protoICMP
	if f == V6 {
		icmp = protoICMPv6
	}
	p.proto = pick(r, []int{protoTCP, protoTCP, protoUDP, icmp, 47})
	if p.proto == icmp {
		p.icmpType = pick(r, []int{8, 128, 3, 135, 134})
		p.icmpCode = r.IntN(2)
	} else if protoHasPorts(p.proto) {
		p.sport = pick(r, []int{80, 1234, 53, 8005, 1010})
		p.dport = pick(r, []int{80, 443, 53, 8005, 22, 1015, 5432})
	}
	return p
}

func (m *refModel) ifaceOf(a netip.Addr) string {
	for _, w := range m.endpoints {
		if w.Spec.Node != m.cfg.NodeName {
			continue
		}
		for _, x := range epAddrs(w) {
			if x == a {
				return w.Spec.InterfaceName
			}
		}
	}
	return "eth0"
}

func (m *refModel) router() simRouter {
	return func(a netip.Addr) string { return m.ifaceOf(a) }
}

// TestRenderedChainsAgreeWithModel renders random policies and endpoints,
// then checks that random packets meet the same fate in the simulated
// chains as in the direct evaluation of the model, and that every set is
// one some rule matches on.
func TestRenderedChainsAgreeWithModel(t *testing.T) {
	scenarios, packets := 400, 150
	if testing.Short() {
		scenarios = 60
	}
	for seed := range uint64(scenarios) {
		r := rand.New(rand.NewPCG(seed, 42))
		m := genModel(r)
		rendered, err := Render(m.cfg, m.policies, m.endpoints, m.pools)
		if err != nil {
			t.Fatalf("seed %d: render: %v", seed, err)
		}
		// Sets exactly for the rules rendered: none for policies that
		// select nothing here, none in a family a rule cannot match.
		if err := checkSetsReferenced(rendered); err != nil {
			t.Fatalf("seed %d: %v\npolicies: %s", seed, err, dumpPolicies(m))
		}
		for _, f := range []Family{V4, V6} {
			s, err := newSim(rendered, f, m.router())
			if err != nil {
				t.Fatalf("seed %d IPv%d: %v", seed, f, err)
			}
			for i := range packets {
				p := genPacket(r, m, f)
				var got, want bool
				var trace []string
				kind := "forward"
				if p.outIf == "eth0" && strings.HasPrefix(p.inIf, "cx") && i%4 == 0 {
					kind = "input" // to the host itself
					p.outIf = ""
					got, trace = s.input(p)
					want = m.input(p)
				} else {
					got, trace = s.forward(p)
					want = m.forward(p)
				}
				if got != want {
					t.Fatalf("seed %d IPv%d %s packet %v: chains say %v, model says %v\npolicies: %s\ntrace:\n  %s",
						seed, f, kind, p, got, want, dumpPolicies(m), strings.Join(trace, "\n  "))
				}
				if s.masquerade(p) != m.masquerade(p) {
					t.Fatalf("seed %d IPv%d packet %v: masquerade disagrees", seed, f, p)
				}
			}
		}
	}
}

func dumpPolicies(m *refModel) string {
	var sb strings.Builder
	for _, p := range m.policies {
		fmt.Fprintf(&sb, "\n  %s order=%v sel=%q types=%v", p.Metadata.Name, orderStr(p.Spec.Order), p.Spec.Selector, p.Spec.EffectiveTypes())
		for i, r := range p.Spec.Ingress {
			fmt.Fprintf(&sb, "\n    in[%d] %+v", i, r)
		}
		for i, r := range p.Spec.Egress {
			fmt.Fprintf(&sb, "\n    eg[%d] %+v", i, r)
		}
	}
	for _, w := range m.endpoints {
		fmt.Fprintf(&sb, "\n  ep %s %v %s %s %v", w.Metadata.Name, w.Metadata.Labels, w.Spec.Node, w.Spec.InterfaceName, w.Spec.IPNetworks)
	}
	return sb.String()
}

func orderStr(o *float64) string {
	if o == nil {
		return "nil"
	}
	return fmt.Sprint(*o)
}
