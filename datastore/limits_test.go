package datastore

import (
	"fmt"
	"strings"
	"testing"
)

// Resource limits that keep one bad object from hurting a node: each case
// is refused with the field and the reason, each near-miss is accepted.
func TestValidationLimits(t *testing.T) {
	ports := func(n int) string {
		p := make([]string, n)
		for i := range p {
			p[i] = fmt.Sprint(1000 + i)
		}
		return "[" + strings.Join(p, ",") + "]"
	}
	policy := func(src, dst int) string {
		return fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec:
  selector: all()
  ingress:
  - action: Allow
    protocol: tcp
    source: {ports: %s}
    destination: {ports: %s}`, ports(src), ports(dst))
	}
	pool := func(cidr string) string {
		return fmt.Sprintf("apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: %q, blockSize: %d}", cidr, map[bool]int{true: 122, false: 26}[strings.Contains(cidr, ":")])
	}
	node := func(addr, addr6 string) string {
		s := fmt.Sprintf("apiVersion: calyx.dev/v1\nkind: Node\nmetadata: {name: h1}\nspec: {address: %q", addr)
		if addr6 != "" {
			s += fmt.Sprintf(", ipv6Address: %q", addr6)
		}
		return s + "}"
	}
	wep := func(ifname string) string {
		return fmt.Sprintf("apiVersion: calyx.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: w}\nspec: {node: h1, workload: w, interfaceName: %q, ipNetworks: [10.244.0.1/32]}", ifname)
	}
	bad := []struct {
		name, doc string
		want      []string
	}{
		// 9000 source ports are 600 multiport matches, 30 destination ports
		// 2: the rule would become 1200 iptables rules.
		{"port product", policy(9000, 30), []string{"spec.ingress[0]", "1200 iptables rules", "600 source alternatives x 2 destination", "at most 1000"}},
		{"pool 96.0.0.0/3 holds loopback", pool("96.0.0.0/3"), []string{"spec.cidr", "overlaps loopback 127.0.0.0/8"}},
		{"pool 0.0.0.0/1", pool("0.0.0.0/1"), []string{`overlaps "this network" 0.0.0.0/8`, "overlaps loopback 127.0.0.0/8"}},
		{"pool with multicast", pool("224.0.0.0/20"), []string{"overlaps multicast 224.0.0.0/4"}},
		{"pool with broadcast", pool("255.255.255.0/24"), []string{"255.255.255.0/24 overlaps reserved (with the broadcast address)"}},
		{"pool with link-local", pool("169.254.0.0/20"), []string{"overlaps link-local 169.254.0.0/16"}},
		{"v6 pool with loopback", pool("::/120"), []string{"overlaps unspecified and loopback ::/127"}},
		{"v6 pool with link-local", pool("fe80::/64"), []string{"overlaps link-local fe80::/10"}},
		{"v6 pool with multicast", pool("ff02::/120"), []string{"overlaps multicast ff00::/8"}},
		{"node loopback", node("127.0.0.1", ""), []string{"spec.address", "127.0.0.1 is a loopback address"}},
		{"node unspecified", node("0.0.0.0", ""), []string{"spec.address", "unspecified"}},
		{"node broadcast", node("255.255.255.255", ""), []string{"spec.address", "reserved"}},
		{"node multicast", node("239.1.1.1", ""), []string{"spec.address", "multicast"}},
		{"node link-local", node("169.254.1.1", ""), []string{"spec.address", "link-local"}},
		{"node v6 loopback", node("198.18.0.1", "::1"), []string{"spec.ipv6Address", "loopback"}},
		{"node v6 link-local", node("198.18.0.1", "fe80::1"), []string{"spec.ipv6Address", "link-local"}},
		{"endpoint on eth0", wep("eth0"), []string{"spec.interfaceName", `"eth0" is not a Calyx workload interface`}},
		{"endpoint on lo", wep("lo"), []string{"spec.interfaceName", "not a Calyx workload interface"}},
		{"endpoint on bare cx", wep("cx"), []string{"spec.interfaceName", "not a Calyx workload interface"}},
		{"endpoint with odd characters", wep("cx-../x"), []string{"spec.interfaceName", "not a Calyx workload interface"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeFile([]byte(c.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
	good := map[string]string{
		"port product at the limit": policy(15*100, 15*10),
		"pool 10.0.0.0/8":           pool("10.0.0.0/8"),
		"pool 100.64.0.0/10":        pool("100.64.0.0/10"),
		"v6 pool":                   pool("fd00:10:244::/56"),
		"node":                      node("198.18.0.1", "fd00:198:18::1"),
		"endpoint":                  wep("cx0123456789a"),
	}
	for name, doc := range good {
		if _, err := DecodeFile([]byte(doc)); err != nil {
			t.Errorf("%s refused: %v", name, err)
		}
	}
}
