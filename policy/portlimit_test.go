package policy

import (
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/selector"
)

// Validation's count of the iptables rules a policy rule becomes
// (datastore.PortAlternatives, bounded by MaxRulesPerPolicyRule) is the
// number the renderer really writes.
func TestRenderedRulesMatchValidationCount(t *testing.T) {
	ports := func(n int, ranges bool) []datastore.Port {
		out := make([]datastore.Port, n)
		for i := range out {
			p := uint16(1000 + 3*i)
			out[i] = datastore.Port{MinPort: p, MaxPort: p}
			if ranges && i%3 == 0 {
				out[i].MaxPort = p + 1
			}
		}
		return out
	}
	var tcp datastore.Protocol
	if err := tcp.UnmarshalJSON([]byte(`"tcp"`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ src, dst int }{{0, 0}, {1, 0}, {15, 16}, {40, 29}, {100, 7}} {
		for _, ranges := range []bool{false, true} {
			r := &datastore.Rule{Action: datastore.ActionAllow, Protocol: &tcp}
			r.Source.Ports, r.Destination.Ports = ports(c.src, ranges), ports(c.dst, ranges)
			r.Destination.Ports = append(r.Destination.Ports, datastore.Port{Name: "http"})
			cr, err := compileRule(r, &selectorCache{m: map[string]*selector.Selector{}})
			if err != nil {
				t.Fatal(err)
			}
			want := max(datastore.PortAlternatives(r.Source.Ports), 1) * max(datastore.PortAlternatives(r.Destination.Ports), 1)
			if got := len(ruleMatches(&cr, V4)); got != want {
				t.Errorf("%d source, %d destination ports (ranges %v): rendered %d rules, validation counts %d", c.src, c.dst, ranges, got, want)
			}
		}
	}
}
