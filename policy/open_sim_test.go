package policy

import (
	"net/netip"
	"testing"

	"github.com/calyx-net/calyx/datastore"
)

// TestOpenEndpointLinkScopes: an open endpoint's IPv6 link-local and
// multicast traffic on its own interface passes as its empty chain let it
// before the open sets; on another interface, or for a selected endpoint,
// the entries do not apply.
func TestOpenEndpointLinkScopes(t *testing.T) {
	eps := []*datastore.WorkloadEndpoint{
		testEndpoint("open", "cxopen", "fd00:244::2/128", nil),
		testEndpoint("closed", "cxclosed", "fd00:244::3/128", map[string]string{"app": "db"}),
	}
	deny := &datastore.Policy{Metadata: datastore.Metadata{Name: "db-lockdown"}, Spec: datastore.PolicySpec{
		Selector: `app == "db"`, Types: []datastore.PolicyType{datastore.PolicyTypeIngress, datastore.PolicyTypeEgress}}}
	r, err := Render(Config{NodeName: "node-a", IPv6: true, HostToWorkloadPolicy: true}, []*datastore.Policy{deny}, eps, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Link-local sources route back through the interface they came in by.
	var in string
	s, err := newSim(r, V6, func(a netip.Addr) string {
		if a.IsLinkLocalUnicast() {
			return in
		}
		return map[string]string{"fd00:244::2": "cxopen", "fd00:244::3": "cxclosed"}[a.String()]
	})
	if err != nil {
		t.Fatal(err)
	}
	ll, host := netip.MustParseAddr("fe80::50"), netip.MustParseAddr("fe80::1")
	solicited := netip.MustParseAddr("ff02::1:ff00:2")
	for _, c := range []struct {
		name   string
		path   func(simPacket) (bool, []string)
		p      simPacket
		accept bool
	}{
		{"open: link-local to the host", s.input,
			simPacket{family: V6, inIf: "cxopen", src: ll, dst: host, proto: protoTCP, dport: 8080, ctState: "NEW"}, true},
		{"selected: link-local to the host, egress denied", s.input,
			simPacket{family: V6, inIf: "cxclosed", src: ll, dst: host, proto: protoTCP, dport: 8080, ctState: "NEW"}, false},
		{"open: host echo to its link-local address", s.output,
			simPacket{family: V6, outIf: "cxopen", src: host, dst: ll, proto: protoICMPv6, icmpType: 128, ctState: "NEW"}, true},
		{"open: host UDP to a multicast group on its interface", s.output,
			simPacket{family: V6, outIf: "cxopen", src: host, dst: solicited, proto: protoUDP, dport: 5353, ctState: "NEW"}, true},
		{"selected: host UDP to a multicast group, ingress denied", s.output,
			simPacket{family: V6, outIf: "cxclosed", src: host, dst: solicited, proto: protoUDP, dport: 5353, ctState: "NEW"}, false},
		{"open: its global address", s.output,
			simPacket{family: V6, outIf: "cxopen", src: host, dst: netip.MustParseAddr("fd00:244::2"), proto: protoTCP, dport: 80, ctState: "NEW"}, true},
		{"open entry on the wrong interface", s.output,
			simPacket{family: V6, outIf: "cxother", src: host, dst: netip.MustParseAddr("fd00:244::2"), proto: protoTCP, dport: 80, ctState: "NEW"}, false},
	} {
		in = c.p.inIf
		got, trace := c.path(c.p)
		if got != c.accept {
			t.Errorf("%s: accepted=%v, want %v\n  %v", c.name, got, c.accept, trace)
		}
	}
}
