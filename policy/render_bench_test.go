package policy

import (
	"fmt"
	"testing"

	"github.com/calyx-net/calyx/datastore"
)

// bigInput is ~50k rules: 200 endpoints over 50 apps, 500 policies of 90
// rules each (like the policybench scenario).
func bigInput() ([]*datastore.Policy, []*datastore.WorkloadEndpoint) {
	tcp, _ := datastore.ParseProtocol("tcp")
	var eps []*datastore.WorkloadEndpoint
	for i := range 200 {
		eps = append(eps, testEndpoint(fmt.Sprintf("ep-%d", i), fmt.Sprintf("cx%011x", i),
			fmt.Sprintf("10.244.%d.%d/32", i/250, i%250+1), map[string]string{"app": fmt.Sprintf("app-%d", i%50)}))
	}
	var pols []*datastore.Policy
	for j := range 500 {
		p := &datastore.Policy{Metadata: datastore.Metadata{Name: fmt.Sprintf("pol-%d", j)},
			Spec: datastore.PolicySpec{Selector: fmt.Sprintf(`app == "app-%d"`, j%50)}}
		for k := range 90 {
			p.Spec.Ingress = append(p.Spec.Ingress, datastore.Rule{Action: datastore.ActionAllow, Protocol: &tcp,
				Source:      datastore.EntityRule{Selector: fmt.Sprintf(`app == "app-%d"`, (j+k)%50)},
				Destination: datastore.EntityRule{Ports: []datastore.Port{{MinPort: uint16(8000 + k), MaxPort: uint16(8000 + k)}}}})
		}
		pols = append(pols, p)
	}
	return pols, eps
}

// BenchmarkRender50k renders the whole state from scratch.
func BenchmarkRender50k(b *testing.B) {
	pols, eps := bigInput()
	b.ResetTimer()
	for b.Loop() {
		r, err := Render(Config{NodeName: "node-a"}, pols, eps, nil)
		if err != nil {
			b.Fatal(err)
		}
		if r.RuleCount() < 45000 {
			b.Fatalf("only %d rules", r.RuleCount())
		}
	}
}

// BenchmarkOnePolicyUpdate50k is the in-memory part of a one-policy update
// at that scale: SetPolicy, refresh and plan.
func BenchmarkOnePolicyUpdate50k(b *testing.B) {
	pols, eps := bigInput()
	d, err := NewWithRunner(Config{NodeName: "node-a"}, nil, &fakeKernel{})
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range eps {
		_ = d.SetEndpoint(w)
	}
	for _, p := range pols {
		_ = d.SetPolicy(p)
	}
	if err := d.Apply(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		p := *pols[7]
		p.Spec.Ingress = append([]datastore.Rule(nil), p.Spec.Ingress...)
		p.Spec.Ingress[0].Destination.Ports = []datastore.Port{{MinPort: uint16(i), MaxPort: uint16(i)}}
		if err := d.SetPolicy(&p); err != nil {
			b.Fatal(err)
		}
		if err := d.Apply(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}
