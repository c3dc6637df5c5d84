package policybench

import (
	"fmt"

	"github.com/calyx-net/calyx/datastore"
)

// scenario is the benchmark's input: endpoints spread over apps, policies
// selecting one app each, with rules naming other apps and CIDRs.
type scenario struct {
	endpoints []*datastore.WorkloadEndpoint
	policies  []*datastore.Policy
	pools     []*datastore.IPPool
}

const benchApps = 50

func benchEndpoint(i int) *datastore.WorkloadEndpoint {
	return &datastore.WorkloadEndpoint{
		Metadata: datastore.Metadata{Name: fmt.Sprintf("ep-%05d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%benchApps), "env": "prod"}},
		Spec: datastore.WorkloadEndpointSpec{
			Node:          "bench",
			InterfaceName: fmt.Sprintf("cx%011x", i),
			IPNetworks:    []string{fmt.Sprintf("10.244.%d.%d/32", i/250, i%250+1)},
		},
	}
}

// benchPolicy is policy j with its rules; variant changes one port so an
// update is a real change of one chain.
func benchPolicy(j, rules, variant int) *datastore.Policy {
	tcp, _ := datastore.ParseProtocol("tcp")
	udp, _ := datastore.ParseProtocol("udp")
	order := float64(j % 20)
	p := &datastore.Policy{
		Metadata: datastore.Metadata{Name: fmt.Sprintf("pol-%04d", j)},
		Spec:     datastore.PolicySpec{Order: &order, Selector: fmt.Sprintf(`app == "app-%d"`, j%benchApps)},
	}
	for k := range rules {
		r := datastore.Rule{Action: datastore.ActionAllow, Protocol: &tcp}
		port := uint16(8000 + k + variant)
		switch k % 5 {
		case 0, 1, 2:
			r.Source.Selector = fmt.Sprintf(`app == "app-%d"`, (j+k)%benchApps)
		case 3:
			r.Source.Nets = []string{fmt.Sprintf("172.16.%d.0/24", k%250)}
		case 4:
			r.Protocol = &udp
			r.Action = datastore.ActionDeny
			r.Source.Selector = `env == "dev"`
		}
		r.Destination.Ports = []datastore.Port{{MinPort: port, MaxPort: port}}
		p.Spec.Ingress = append(p.Spec.Ingress, r)
	}
	return p
}

func newScenario(endpoints, policies, rules int) *scenario {
	s := &scenario{pools: []*datastore.IPPool{{Metadata: datastore.Metadata{Name: "pool"},
		Spec: datastore.IPPoolSpec{CIDR: "10.244.0.0/16", NATOutgoing: true}}}}
	for i := range endpoints {
		s.endpoints = append(s.endpoints, benchEndpoint(i))
	}
	for j := range policies {
		s.policies = append(s.policies, benchPolicy(j, rules, 0))
	}
	return s
}
