package datastore

import (
	"strings"
	"testing"
)

// Each case is one kind of bad input; the error must name the document,
// the field and the reason.
func TestDecodeFileRejectsBadInput(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []string // substrings of the error, all required
	}{
		{"bad CIDR", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0/16}`, []string{"document 1 (line 1)", "spec.cidr", `"10.244.0/16" is not a CIDR`}},
		{"host bits", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.1.0/16}`, []string{"spec.cidr", "host bits set", "did you mean 10.244.0.0/16"}},
		{"block size out of range v4", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0.0/16, blockSize: 33}`, []string{"spec.blockSize", "33 is out of range for an IPv4 pool (20-32)"}},
		{"block size out of range v6", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: "fd00::/48", blockSize: 64}`, []string{"spec.blockSize", "64 is out of range for an IPv6 pool (116-128)"}},
		{"block bigger than pool", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.0.0.0/24, blockSize: 22}`, []string{"spec.blockSize", "do not fit in the pool"}},
		{"AS out of range", `apiVersion: calyx.dev/v1
kind: BGPConfig
metadata: {name: default}
spec: {asNumber: 4294967296}`, []string{"spec.asNumber", "4294967296 is out of range"}},
		{"AS negative", `apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 198.18.0.253, asNumber: -1}`, []string{"spec.asNumber", "-1 is out of range"}},
		{"peer AS missing", `apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 198.18.0.253}`, []string{"spec.asNumber", "is required"}},
		{"bad peer IP", `apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 198.18.0.300, asNumber: 65000}`, []string{"spec.peerIP", `"198.18.0.300" is not an IP address`}},
		{"bad node address", `apiVersion: calyx.dev/v1
kind: Node
metadata: {name: host1}
spec: {address: "fd00::1"}`, []string{"spec.address", "is not an IPv4 address"}},
		{"multicast router id", `apiVersion: calyx.dev/v1
kind: Node
metadata: {name: host1}
spec: {address: 198.18.0.1, routerID: 224.0.0.1}`, []string{"spec.routerID", "cannot be a BGP router ID"}},
		{"unknown field", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0.0/16, natOutgoin: true}`, []string{"spec.natOutgoin: unknown field", "known fields"}},
		{"unknown field case typo", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {CIDR: 10.244.0.0/16}`, []string{"spec.CIDR: unknown field", `did you mean "cidr"`}},
		{"unknown nested field", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec:
  selector: all()
  ingress:
  - action: Allow
    source: {selctor: "app == 'web'"}`, []string{"spec.ingress[0].source.selctor: unknown field"}},
		{"unknown kind", `apiVersion: calyx.dev/v1
kind: IPPol
metadata: {name: p}`, []string{"kind: unknown kind \"IPPol\""}},
		{"wrong apiVersion", `apiVersion: calyx.dev/v2
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0.0/16}`, []string{"apiVersion", `must be "calyx.dev/v1"`}},
		{"name not DNS-1123", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: My_Pool}
spec: {cidr: 10.244.0.0/16}`, []string{"metadata.name", `"My_Pool" is not a DNS-1123 label`}},
		{"name too long", `apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: ` + strings.Repeat("a", 64) + `}
spec: {peerIP: 192.0.2.1, asNumber: 65000}`, []string{"metadata.name", "at most 63"}},
		{"policy name too long", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: ` + strings.Repeat("a", 254) + `}
spec: {selector: all()}`, []string{"metadata.name", "at most 253"}},
		{"bad port name", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec: {selector: all(), ingress: [{action: Allow, protocol: tcp, destination: {ports: [Http]}}]}`, []string{"Http"}},
		{"bad endpoint port", `apiVersion: calyx.dev/v1
kind: WorkloadEndpoint
metadata: {name: w}
spec: {node: h1, interfaceName: cx1, ipNetworks: [10.0.0.1/32], ports: [{name: http, protocol: icmp, port: 80}]}`, []string{"spec.ports[0].protocol"}},
		{"bad namespace label", `apiVersion: calyx.dev/v1
kind: Profile
metadata: {name: kns.x}
spec: {labelsToApply: {"pcns.a/b/c": "x"}}`, []string{"spec.labelsToApply"}},
		{"singleton name", `apiVersion: calyx.dev/v1
kind: BGPConfig
metadata: {name: mine}
spec: {}`, []string{"metadata.name", `must be "default"`}},
		{"bad selector", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec: {selector: "app = 'web'"}`, []string{"spec.selector", "invalid selector"}},
		{"bad rule selector", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec:
  selector: all()
  ingress: [{action: Allow, source: {selector: "has(app"}}]`, []string{"spec.ingress[0].source.selector", "invalid selector"}},
		{"bad action", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec: {selector: all(), ingress: [{action: Accept}]}`, []string{"spec.ingress[0].action", `"Accept" is not an action`}},
		{"ports without protocol", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec: {selector: all(), ingress: [{action: Allow, destination: {ports: [80]}}]}`, []string{"spec.ingress[0].protocol", "ports need protocol"}},
		{"bad port", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec: {selector: all(), ingress: [{action: Allow, protocol: tcp, destination: {ports: [70000]}}]}`, []string{"port 70000 is out of range"}},
		{"bad rule net", `apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: p}
spec: {selector: all(), egress: [{action: Allow, destination: {nets: [10.0.0.1/33]}}]}`, []string{"spec.egress[0].destination.nets[0]", "is not a CIDR"}},
		{"bad label", `apiVersion: calyx.dev/v1
kind: Node
metadata: {name: host1, labels: {"bad key!": x}}
spec: {address: 198.18.0.1}`, []string{"metadata.labels", `label key "bad key!" is invalid`}},
		{"wrong type", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.244.0.0/16, natOutgoing: "yes"}`, []string{"spec.natOutgoing", "expected true or false"}},
		{"wep with a range", `apiVersion: calyx.dev/v1
kind: WorkloadEndpoint
metadata: {name: w}
spec: {node: host1, workload: w, interfaceName: cx0123456789a, ipNetworks: [10.244.0.0/24]}`, []string{"spec.ipNetworks[0]", "single address"}},
		{"overlapping pools", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: a}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: b}
spec: {cidr: 10.244.128.0/17}`, []string{`IPPool "b": spec.cidr: 10.244.128.0/17 overlaps IPPool "a" (10.244.0.0/16)`}},
		{"duplicate", `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: a}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: a}
spec: {cidr: 10.245.0.0/16}`, []string{"document 2 (line 6)", "also defined in document 1"}},
		{"not yaml", "kind: [", []string{"not valid YAML"}},
		{"empty", "# nothing\n", []string{"no documents"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			docs, err := DecodeFile([]byte(c.doc))
			if err == nil {
				t.Fatalf("accepted bad input: %+v", docs)
			}
			if docs != nil {
				t.Errorf("returned documents along with an error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// One bad document spoils the file: nothing is returned, and every problem
// is listed on its own line.
func TestDecodeFileListsEveryProblem(t *testing.T) {
	doc := `apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: good}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: Bad}
spec: {cidr: 10.1.0.0/33}
`
	_, err := DecodeFile([]byte(doc))
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines (name and cidr), got %d:\n%s", len(lines), err)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "document 2 (line 6): IPPool \"Bad\": ") {
			t.Errorf("line does not name the document and resource: %q", l)
		}
	}
}

func TestDecodeFileAcceptsGoodInput(t *testing.T) {
	doc := `# cluster settings
apiVersion: calyx.dev/v1
kind: BGPConfig
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMesh: true, gracefulRestart: {enabled: true, restartTimeSeconds: 120}}
---
apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: default-v4}
spec: {cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: true, nodeSelector: all()}
---
apiVersion: calyx.dev/v1
kind: IPPool
metadata: {name: default-v6}
spec: {cidr: "fd00:10:244::/48"}
---
apiVersion: calyx.dev/v1
kind: Policy
metadata: {name: db, labels: {team: data}}
spec:
  order: 10
  selector: app == "db"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: tcp
    source: {selector: app == "web", nets: [10.244.0.0/16, 192.0.2.1]}
    destination: {ports: [5432, "6000:6010"]}
  - action: Allow
    protocol: icmp
    icmp: {type: 8}
`
	docs, err := DecodeFile([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 4 {
		t.Fatalf("want 4 documents, got %d", len(docs))
	}
	pol := docs[3].Resource.(*Policy)
	if docs[3].Line != 17 {
		t.Errorf("policy starts on line 17, got %d", docs[3].Line)
	}
	r := pol.Spec.Ingress[0]
	if r.Protocol.Number() != 6 || r.Destination.Ports[1] != (Port{MinPort: 6000, MaxPort: 6010}) {
		t.Errorf("rule decoded wrongly: %+v", r)
	}
	if p := docs[2].Resource.(*IPPool); p.Spec.EffectiveBlockSize() != 122 {
		t.Errorf("v6 default block size: %d", p.Spec.EffectiveBlockSize())
	}
}

// -o yaml output must be taken back by apply as it is.
func TestYAMLRoundTrip(t *testing.T) {
	order := 5.5
	in := []Resource{
		&IPPool{TypeMeta: TypeMeta{APIVersion, KindIPPool}, Metadata: Metadata{Name: "p", Labels: map[string]string{"a": "b"}, ResourceVersion: "42", CreationTimestamp: "2026-01-01T00:00:00Z"}, Spec: IPPoolSpec{CIDR: "10.244.0.0/16", NATOutgoing: true}},
		&Policy{TypeMeta: TypeMeta{APIVersion, KindPolicy}, Metadata: Metadata{Name: "x"}, Spec: PolicySpec{Order: &order, Selector: "all()", Ingress: []Rule{{Action: ActionAllow, Protocol: mustProto("udp"), Destination: EntityRule{Ports: []Port{{MinPort: 53, MaxPort: 53}, {MinPort: 1000, MaxPort: 2000}, {Name: "dns-tcp"}}}}}}},
	}
	y, err := EncodeYAML(in)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := DecodeFile(y)
	if err != nil {
		t.Fatalf("own output rejected: %v\n%s", err, y)
	}
	y2, _ := EncodeYAML([]Resource{docs[0].Resource, docs[1].Resource})
	if string(y) != string(y2) {
		t.Errorf("round trip changed the output:\n%s\n---- vs ----\n%s", y, y2)
	}
}

func mustProto(s string) *Protocol {
	p, err := ParseProtocol(s)
	if err != nil {
		panic(err)
	}
	return &p
}

func TestParseKindForms(t *testing.T) {
	for in, want := range map[string]Kind{"ippool": KindIPPool, "ippools": KindIPPool, "IPPool": KindIPPool, "pool": KindIPPool,
		"policies": KindPolicy, "wep": KindWorkloadEndpoint, "bgppeers": KindBGPPeer, "nodes": KindNode, "bgpconfig": KindBGPConfig} {
		got, err := ParseKind(in)
		if err != nil || got != want {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseKind("pods"); err == nil || !strings.Contains(err.Error(), "known kinds") {
		t.Errorf("unknown kind error: %v", err)
	}
}

func TestWorkloadEndpointName(t *testing.T) {
	if n := WorkloadEndpointName("host1", "abc123", "eth0"); n != "host1-abc123-eth0" {
		t.Errorf("short name %q", n)
	}
	if n := WorkloadEndpointName("host1.example.com", "abc123", "eth0"); !strings.HasPrefix(n, "host1-example-com-abc123-eth0-") {
		t.Errorf("sanitized name %q", n)
	}
	// Runtime-style IDs sharing a 12-character prefix must not collide.
	a := WorkloadEndpointName("host1", "0123456789ab"+strings.Repeat("c", 52), "eth0")
	b := WorkloadEndpointName("host1", "0123456789ab"+strings.Repeat("d", 52), "eth0")
	if a == b {
		t.Errorf("distinct containers share the name %q", a)
	}
	for _, n := range []string{a, b, WorkloadEndpointName(strings.Repeat("h", 70), "abc", "eth0"), WorkloadEndpointName("h", "a_b", "eth0")} {
		if len(n) > 63 || !dns1123Label.MatchString(n) {
			t.Errorf("name %q is not a DNS-1123 label", n)
		}
	}
	if WorkloadEndpointName("h", "a_b", "eth0") == WorkloadEndpointName("h", "a.b", "eth0") {
		t.Error("sanitizing merged distinct container IDs")
	}
	if a != WorkloadEndpointName("host1", "0123456789ab"+strings.Repeat("c", 52), "eth0") {
		t.Error("the name is not stable")
	}
}

func TestParseKey(t *testing.T) {
	k, n, ok := ParseKey(Key(KindIPPool, "p1"))
	if !ok || k != KindIPPool || n != "p1" {
		t.Errorf("ParseKey round trip: %v %v %v", k, n, ok)
	}
	if _, _, ok := ParseKey(IPAMPrefix + "blocks/10.0.0.0-26"); ok {
		t.Error("IPAM key parsed as a resource")
	}
}
