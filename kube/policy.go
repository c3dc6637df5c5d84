package kube

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/calyx-net/calyx/datastore"
)

// TranslatePolicy turns a NetworkPolicy into the Calyx Policy that
// enforces exactly its semantics:
//   - spec.podSelector selects endpoints of the policy's namespace;
//   - policyTypes, when absent, is Ingress, plus Egress when the policy
//     has egress rules;
//   - each rule allows traffic matching any of its peers (none: any peer)
//     and any of its ports (none: every port and protocol); the rule is
//     rendered as one Calyx rule per (peer, protocol);
//   - a peer is a podSelector (this namespace), a namespaceSelector (pods
//     of the namespaces it selects, through their Profile's pcns. labels),
//     both (pods matching both), or an ipBlock (cidr minus except);
//   - ports are numbers, ranges (endPort) or names (the named port of the
//     destination pod: the selected pod on ingress, the peer on egress);
//   - policies add up (allow rules only), and a selected endpoint is
//     default-deny in each direction the policy covers.
func TranslatePolicy(np *networkingv1.NetworkPolicy) (*datastore.Policy, error) {
	r, _ := datastore.NewResource(datastore.KindPolicy)
	p := r.(*datastore.Policy)
	p.Metadata.Name = PolicyName(np.Namespace, np.Name)
	p.Metadata.Labels = ownedLabels()
	order := PolicyOrder
	p.Spec.Order = &order
	podTerms, err := labelSelector(&np.Spec.PodSelector, "")
	if err != nil {
		return nil, fmt.Errorf("spec.podSelector: %w", err)
	}
	p.Spec.Selector = and(append([]string{inNamespace(np.Namespace)}, podTerms...)...)
	p.Spec.Types = policyTypes(np)

	for i, ir := range np.Spec.Ingress {
		rules, err := translateRule(np.Namespace, ir.From, ir.Ports, true)
		if err != nil {
			return nil, fmt.Errorf("spec.ingress[%d]: %w", i, err)
		}
		p.Spec.Ingress = append(p.Spec.Ingress, rules...)
	}
	for i, er := range np.Spec.Egress {
		rules, err := translateRule(np.Namespace, er.To, er.Ports, false)
		if err != nil {
			return nil, fmt.Errorf("spec.egress[%d]: %w", i, err)
		}
		p.Spec.Egress = append(p.Spec.Egress, rules...)
	}
	if !slices.Contains(p.Spec.Types, datastore.PolicyTypeIngress) {
		p.Spec.Ingress = nil // Kubernetes ignores rules of a type not listed
	}
	if !slices.Contains(p.Spec.Types, datastore.PolicyTypeEgress) {
		p.Spec.Egress = nil
	}
	if err := datastore.Validate(p); err != nil {
		return nil, err
	}
	return p, nil
}

func policyTypes(np *networkingv1.NetworkPolicy) []datastore.PolicyType {
	if len(np.Spec.PolicyTypes) == 0 {
		t := []datastore.PolicyType{datastore.PolicyTypeIngress}
		if len(np.Spec.Egress) > 0 {
			t = append(t, datastore.PolicyTypeEgress)
		}
		return t
	}
	var t []datastore.PolicyType
	for _, pt := range np.Spec.PolicyTypes {
		switch pt {
		case networkingv1.PolicyTypeIngress:
			t = append(t, datastore.PolicyTypeIngress)
		case networkingv1.PolicyTypeEgress:
			t = append(t, datastore.PolicyTypeEgress)
		}
	}
	return t
}

// translateRule is one ingress (peers are sources) or egress (peers are
// destinations) rule.
func translateRule(ns string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, ingress bool) ([]datastore.Rule, error) {
	entities := []datastore.EntityRule{{}} // no peers: any peer
	if len(peers) > 0 {
		entities = entities[:0]
		for i, peer := range peers {
			e, err := translatePeer(ns, peer)
			if err != nil {
				return nil, fmt.Errorf("peer %d: %w", i, err)
			}
			entities = append(entities, e)
		}
	}
	groups, err := portGroups(ports)
	if err != nil {
		return nil, err
	}
	var out []datastore.Rule
	for _, e := range entities {
		for _, g := range groups {
			r := datastore.Rule{Action: datastore.ActionAllow, Protocol: g.proto}
			peer, ports := e, datastore.EntityRule{Ports: g.ports}
			if ingress {
				r.Source, r.Destination = peer, ports
			} else {
				peer.Ports = g.ports
				r.Destination = peer
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func translatePeer(ns string, peer networkingv1.NetworkPolicyPeer) (datastore.EntityRule, error) {
	var e datastore.EntityRule
	if b := peer.IPBlock; b != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			return e, fmt.Errorf("ipBlock goes alone in a peer")
		}
		e.Nets = []string{b.CIDR}
		e.NotNets = slices.Clone(b.Except)
		return e, nil
	}
	podTerms, err := labelSelector(peer.PodSelector, "")
	if err != nil {
		return e, fmt.Errorf("podSelector: %w", err)
	}
	if peer.NamespaceSelector == nil {
		if peer.PodSelector == nil {
			return e, fmt.Errorf("a peer needs podSelector, namespaceSelector or ipBlock")
		}
		e.Selector = and(append([]string{inNamespace(ns)}, podTerms...)...)
		return e, nil
	}
	nsTerms, err := labelSelector(peer.NamespaceSelector, datastore.NamespaceLabelPrefix)
	if err != nil {
		return e, fmt.Errorf("namespaceSelector: %w", err)
	}
	e.Selector = and(append(append([]string{anyNamespace}, nsTerms...), podTerms...)...)
	return e, nil
}

// portGroup is the ports of one protocol; nil ports: every port.
type portGroup struct {
	proto *datastore.Protocol
	ports []datastore.Port
}

// portGroups groups a rule's ports by protocol (TCP when unset). No ports:
// one group of every protocol and port. A port entry without a port
// number opens the whole protocol.
func portGroups(ports []networkingv1.NetworkPolicyPort) ([]portGroup, error) {
	if len(ports) == 0 {
		return []portGroup{{}}, nil
	}
	var order []string
	byProto := map[string]*portGroup{}
	whole := map[string]bool{}
	for i, pp := range ports {
		name := string(corev1.ProtocolTCP)
		if pp.Protocol != nil {
			name = string(*pp.Protocol)
		}
		proto, err := datastore.ParseProtocol(name)
		if err != nil || !proto.HasPorts() {
			return nil, fmt.Errorf("ports[%d]: protocol %q is not TCP, UDP or SCTP", i, name)
		}
		g := byProto[name]
		if g == nil {
			g = &portGroup{proto: &proto}
			byProto[name] = g
			order = append(order, name)
		}
		if pp.Port == nil {
			whole[name] = true
			continue
		}
		port, err := translatePort(pp)
		if err != nil {
			return nil, fmt.Errorf("ports[%d]: %w", i, err)
		}
		if !slices.Contains(g.ports, port) {
			g.ports = append(g.ports, port)
		}
	}
	out := make([]portGroup, 0, len(order))
	for _, name := range order {
		g := byProto[name]
		if whole[name] {
			g.ports = nil
		}
		out = append(out, *g)
	}
	return out, nil
}

func translatePort(pp networkingv1.NetworkPolicyPort) (datastore.Port, error) {
	if pp.Port.Type == intstr.String {
		if pp.EndPort != nil {
			return datastore.Port{}, fmt.Errorf("endPort goes with a port number, not the name %q", pp.Port.StrVal)
		}
		if err := datastore.ValidatePortName(pp.Port.StrVal); err != nil {
			return datastore.Port{}, err
		}
		return datastore.Port{Name: pp.Port.StrVal}, nil
	}
	lo := pp.Port.IntVal
	hi := lo
	if pp.EndPort != nil {
		hi = *pp.EndPort
	}
	if lo < 1 || lo > 65535 || hi < lo || hi > 65535 {
		return datastore.Port{}, fmt.Errorf("port %d-%d is not a range within 1-65535", lo, hi)
	}
	return datastore.Port{MinPort: uint16(lo), MaxPort: uint16(hi)}, nil
}
