package policy

import (
	"net/netip"
	"testing"

	"github.com/calyx-net/calyx/datastore"
)

func tcpPort(name string, port uint16) datastore.EndpointPort {
	tcp, _ := datastore.ParseProtocol("tcp")
	return datastore.EndpointPort{Name: name, Protocol: tcp, Port: port}
}

// simFor renders the model and returns a simulator of its v4 rules that
// routes the test's addresses to their interfaces.
func simFor(t *testing.T, m *model, routes map[string]string) *sim {
	t.Helper()
	m.refresh()
	s, err := newSim(&Rendered{m: m}, V4, func(a netip.Addr) string { return routes[a.String()] })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fwd(src, dst, inIf, outIf string, proto, dport int) simPacket {
	return simPacket{family: V4, inIf: inIf, outIf: outIf, src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst),
		proto: proto, sport: 40000, dport: dport, ctState: "NEW"}
}

// TestNamedPorts: a named port matches each endpoint's own number for it,
// on ingress (the local endpoint's) and egress (the peer's), and follows
// an endpoint that renumbers it.
func TestNamedPorts(t *testing.T) {
	c, err := (&Config{NodeName: "node-a"}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(&c)
	srv1 := testEndpoint("srv1", "cxsrv1", "10.244.0.2/32", map[string]string{"app": "srv"})
	srv1.Spec.Ports = []datastore.EndpointPort{tcpPort("http", 80)}
	srv2 := testEndpoint("srv2", "cxsrv2", "10.244.0.3/32", map[string]string{"app": "srv"})
	srv2.Spec.Ports = []datastore.EndpointPort{tcpPort("http", 81)}
	cli := testEndpoint("cli", "cxcli", "10.244.0.4/32", map[string]string{"app": "cli"})
	for _, w := range []*datastore.WorkloadEndpoint{srv1, srv2, cli} {
		if err := m.setEndpoint(w); err != nil {
			t.Fatal(err)
		}
	}
	tcp, _ := datastore.ParseProtocol("tcp")
	in := &datastore.Policy{Metadata: datastore.Metadata{Name: "srv-in"}, Spec: datastore.PolicySpec{Selector: `app == "srv"`,
		Ingress: []datastore.Rule{{Action: datastore.ActionAllow, Protocol: &tcp, Destination: datastore.EntityRule{Ports: []datastore.Port{{Name: "http"}}}}}}}
	out := &datastore.Policy{Metadata: datastore.Metadata{Name: "cli-out"}, Spec: datastore.PolicySpec{Selector: `app == "cli"`,
		Types: []datastore.PolicyType{datastore.PolicyTypeEgress},
		Egress: []datastore.Rule{{Action: datastore.ActionAllow, Protocol: &tcp, Destination: datastore.EntityRule{
			Selector: `app == "srv"`, Ports: []datastore.Port{{Name: "http"}}}}}}}
	for _, p := range []*datastore.Policy{in, out} {
		if err := m.setPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	routes := map[string]string{"10.244.0.2": "cxsrv1", "10.244.0.3": "cxsrv2", "10.244.0.4": "cxcli"}
	check := func(s *sim, name string, p simPacket, want bool) {
		t.Helper()
		if got, trace := s.forward(p); got != want {
			t.Errorf("%s: %v, want %v\n%v", name, got, want, trace)
		}
	}
	s := simFor(t, m, routes)
	check(s, "cli -> srv1:80 (its http)", fwd("10.244.0.4", "10.244.0.2", "cxcli", "cxsrv1", protoTCP, 80), true)
	check(s, "cli -> srv1:81 (srv2's http)", fwd("10.244.0.4", "10.244.0.2", "cxcli", "cxsrv1", protoTCP, 81), false)
	check(s, "cli -> srv2:81 (its http)", fwd("10.244.0.4", "10.244.0.3", "cxcli", "cxsrv2", protoTCP, 81), true)
	check(s, "cli -> srv2:80", fwd("10.244.0.4", "10.244.0.3", "cxcli", "cxsrv2", protoTCP, 80), false)
	check(s, "udp to srv1:80 (http is tcp)", fwd("10.244.0.4", "10.244.0.2", "cxcli", "cxsrv1", protoUDP, 80), false)

	// srv1 renumbers http to 8080: the old number stops, the new works.
	srv1b := *srv1
	srv1b.Spec.Ports = []datastore.EndpointPort{tcpPort("http", 8080)}
	if err := m.setEndpoint(&srv1b); err != nil {
		t.Fatal(err)
	}
	s = simFor(t, m, routes)
	check(s, "after renumbering: srv1:80", fwd("10.244.0.4", "10.244.0.2", "cxcli", "cxsrv1", protoTCP, 80), false)
	check(s, "after renumbering: srv1:8080", fwd("10.244.0.4", "10.244.0.2", "cxcli", "cxsrv1", protoTCP, 8080), true)

	// Deleting the policies drops their port sets.
	m.deletePolicy("srv-in")
	m.deletePolicy("cli-out")
	m.refresh()
	for name, set := range m.want.sets {
		if set.Type == setTypeIPPort {
			t.Errorf("port set %s outlives the policies using it", name)
		}
	}
}

// TestProfileLabels: endpoints inherit their profile's labels, a profile
// change re-evaluates them without touching the endpoints, and an
// endpoint's own label cannot override an inherited one.
func TestProfileLabels(t *testing.T) {
	c, err := (&Config{NodeName: "node-a"}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(&c)
	srv := testEndpoint("srv", "cxsrv", "10.244.0.2/32", map[string]string{"app": "srv"})
	cli := testEndpoint("cli", "cxcli", "10.244.0.4/32", map[string]string{"app": "cli", "pcns.team": "blue"})
	cli.Spec.Profiles = []string{"kns.y"}
	for _, w := range []*datastore.WorkloadEndpoint{srv, cli} {
		if err := m.setEndpoint(w); err != nil {
			t.Fatal(err)
		}
	}
	tcp, _ := datastore.ParseProtocol("tcp")
	in := &datastore.Policy{Metadata: datastore.Metadata{Name: "srv-in"}, Spec: datastore.PolicySpec{Selector: `app == "srv"`,
		Ingress: []datastore.Rule{{Action: datastore.ActionAllow, Protocol: &tcp, Source: datastore.EntityRule{Selector: `pcns.team == "blue"`}}}}}
	if err := m.setPolicy(in); err != nil {
		t.Fatal(err)
	}
	routes := map[string]string{"10.244.0.2": "cxsrv", "10.244.0.4": "cxcli"}
	p := fwd("10.244.0.4", "10.244.0.2", "cxcli", "cxsrv", protoTCP, 80)
	m.setProfile("kns.y", map[string]string{"pcns.team": "red"})
	if got, _ := simFor(t, m, routes).forward(p); got {
		t.Error("the endpoint's own pcns.team label overrode its profile's")
	}
	m.setProfile("kns.y", map[string]string{"pcns.team": "blue"})
	if got, _ := simFor(t, m, routes).forward(p); !got {
		t.Error("a profile label change did not reach the endpoint")
	}
	m.setProfile("kns.y", nil)
	cliOwn := *cli
	cliOwn.Metadata.Labels = map[string]string{"app": "cli"}
	if err := m.setEndpoint(&cliOwn); err != nil {
		t.Fatal(err)
	}
	if got, _ := simFor(t, m, routes).forward(p); got {
		t.Error("a deleted profile's labels still apply")
	}
}
