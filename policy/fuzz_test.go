package policy

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
)

// FuzzRenderPolicy feeds arbitrary policy JSON through compile and render:
// whatever is accepted must render to rules the simulator parses, with
// names and comments inside the kernel's limits, and must never panic.
func FuzzRenderPolicy(f *testing.F) {
	f.Add(`{"metadata":{"name":"p"},"spec":{"selector":"app == \"db\"","ingress":[{"action":"Allow","protocol":"TCP","source":{"selector":"app == \"web\""},"destination":{"ports":[5432]}}]}}`)
	f.Add(`{"metadata":{"name":"a-very-long-policy-name-that-goes-on-and-on.example.com"},"spec":{"order":1,"selector":"all()","types":["Ingress","Egress"],"egress":[{"action":"Log"},{"action":"Pass","destination":{"nets":["10.0.0.0/8","fd00::/8","192.0.2.1"],"notNets":["10.1.0.0/16","10.2.0.0/16"]}}]}}`)
	f.Add(`{"metadata":{"name":"p"},"spec":{"selector":"has(x)","ingress":[{"action":"Deny","protocol":"udp","ipVersion":6,"source":{"notSelector":"!has(y)","ports":["1:65535",0,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94]}}]}}`)
	f.Add(`{"metadata":{"name":"p"},"spec":{"selector":"","ingress":[{"action":"Allow","protocol":"icmpv6","icmp":{"type":128,"code":0}},{"action":"Allow","protocol":1,"icmp":{"type":8}}]}}`)
	f.Fuzz(func(t *testing.T, doc string) {
		var p datastore.Policy
		if err := json.Unmarshal([]byte(doc), &p); err != nil {
			return
		}
		eps := []*datastore.WorkloadEndpoint{
			testEndpoint("a", "cxa", "10.244.0.2/32", map[string]string{"app": "db", "x": "1"}),
			testEndpoint("b", "cxb", "fd00::2/128", map[string]string{"app": "web"}),
		}
		r, err := Render(Config{NodeName: "node-a", IPv6: true}, []*datastore.Policy{&p}, eps, nil)
		if err != nil {
			return // refused whole: fine
		}
		for _, set := range r.Sets() {
			if len(set.Name) > 31 {
				t.Errorf("set name %q longer than 31", set.Name)
			}
		}
		for _, fam := range r.Families() {
			route := func(a netip.Addr) string { return "eth0" }
			if _, err := newSim(r, fam, route); err != nil {
				t.Fatalf("IPv%d: rendered rules do not parse: %v", fam, err)
			}
			for _, tb := range tables {
				for _, c := range r.Chains(fam, tb) {
					if len(c.Name) > 28 {
						t.Errorf("chain name %q longer than 28", c.Name)
					}
					for _, l := range c.Lines {
						args := splitArgs(l)
						for i, a := range args {
							if a == "--comment" && len(args[i+1]) > maxCommentLength {
								t.Errorf("comment longer than %d: %q", maxCommentLength, args[i+1])
							}
							if a == "--log-prefix" && len(args[i+1]) > logPrefixMax {
								t.Errorf("log prefix longer than %d: %q", logPrefixMax, args[i+1])
							}
						}
						if strings.ContainsAny(l, "\n\r") {
							t.Errorf("line break inside a rule: %q", l)
						}
					}
				}
			}
		}
	})
}
