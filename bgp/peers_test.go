package bgp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

func node(name, addr string, mods ...func(*datastore.Node)) *datastore.Node {
	n := &datastore.Node{Spec: datastore.NodeSpec{Address: addr}}
	n.Metadata.Name = name
	for _, m := range mods {
		m(n)
	}
	return n
}

func reflector(cluster string) func(*datastore.Node) {
	return func(n *datastore.Node) { n.Spec.RouteReflectorClusterID = cluster }
}
func nodeASN(as uint32) func(*datastore.Node) {
	return func(n *datastore.Node) { n.Spec.ASNumber = as }
}
func labels(kv ...string) func(*datastore.Node) {
	return func(n *datastore.Node) {
		n.Metadata.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Metadata.Labels[kv[i]] = kv[i+1]
		}
	}
}
func ipv6(a string) func(*datastore.Node) { return func(n *datastore.Node) { n.Spec.IPv6Address = a } }

func bgpPeer(name, peerIP string, as uint32, mods ...func(*datastore.BGPPeerSpec)) *datastore.BGPPeer {
	p := &datastore.BGPPeer{Spec: datastore.BGPPeerSpec{PeerIP: peerIP, ASNumber: as}}
	p.Metadata.Name = name
	for _, m := range mods {
		m(&p.Spec)
	}
	return p
}

func onNode(n string) func(*datastore.BGPPeerSpec) {
	return func(s *datastore.BGPPeerSpec) { s.Node = n }
}
func selecting(sel string) func(*datastore.BGPPeerSpec) {
	return func(s *datastore.BGPPeerSpec) { s.NodeSelector = sel }
}
func password(pw string) func(*datastore.BGPPeerSpec) {
	return func(s *datastore.BGPPeerSpec) { s.Password = pw }
}

// peerLine renders a Peer compactly for golden comparisons:
// "ADDR TYPE as=N [port=N] [passive] [rr=CLUSTER] [md5] [src=ADDR] (DESCRIPTION)".
func peerLine(p Peer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s as=%d", p.Address, p.Type, p.ASN)
	if p.Port != 0 {
		fmt.Fprintf(&b, " port=%d", p.Port)
	}
	if p.Passive {
		b.WriteString(" passive")
	}
	if p.RouteReflectorClient {
		fmt.Fprintf(&b, " rr=%s", p.RRClusterID)
	}
	if p.Password != "" {
		b.WriteString(" md5=" + p.Password)
	}
	if p.LocalAddress.IsValid() {
		fmt.Fprintf(&b, " src=%s", p.LocalAddress)
	}
	fmt.Fprintf(&b, " (%s)", p.Description)
	return b.String()
}

func boolp(b bool) *bool { return &b }

func TestDesiredPeers(t *testing.T) {
	a := node("a", "198.18.0.1")
	b := node("b", "198.18.0.2")
	c := node("c", "198.18.0.3")
	meshOff := &datastore.BGPConfigSpec{NodeToNodeMesh: boolp(false)}
	r1 := node("r1", "198.18.0.11", reflector("244.0.0.1"))
	r2 := node("r2", "198.18.0.12", reflector("244.0.0.1"))
	tor := bgpPeer("tor", "198.18.0.254", 65000)

	tests := []struct {
		name  string
		self  *datastore.Node
		nodes []*datastore.Node
		peers []*datastore.BGPPeer
		cfg   *datastore.BGPConfigSpec
		want  []string
	}{
		{
			name: "default full mesh: every other node, iBGP in the cluster AS, higher address waits",
			self: b, nodes: []*datastore.Node{a, b, c},
			want: []string{
				"198.18.0.1 Mesh as=64512 passive src=198.18.0.2 (node a)",
				"198.18.0.3 Mesh as=64512 src=198.18.0.2 (node c)",
			},
		},
		{
			name: "cluster AS and listen port from BGPConfig",
			self: a, nodes: []*datastore.Node{a, b},
			cfg:  &datastore.BGPConfigSpec{ASNumber: 65100, ListenPort: 1790},
			want: []string{"198.18.0.2 Mesh as=65100 port=1790 src=198.18.0.1 (node b)"},
		},
		{
			name: "listen port 179 is the default port",
			self: a, nodes: []*datastore.Node{a, b},
			cfg:  &datastore.BGPConfigSpec{ListenPort: 179},
			want: []string{"198.18.0.2 Mesh as=64512 src=198.18.0.1 (node b)"},
		},
		{
			name: "a node's own AS makes that session eBGP",
			self: a, nodes: []*datastore.Node{a, node("b", "198.18.0.2", nodeASN(65002))},
			want: []string{"198.18.0.2 Mesh as=65002 src=198.18.0.1 (node b)"},
		},
		{
			name: "self missing from the node list, nodes without address, nil entries",
			self: a, nodes: []*datastore.Node{nil, b, node("x", "")},
			want: []string{"198.18.0.2 Mesh as=64512 src=198.18.0.1 (node b)"},
		},
		{
			name: "node address given as CIDR",
			self: a, nodes: []*datastore.Node{a, node("b", "198.18.0.2/24")},
			want: []string{"198.18.0.2 Mesh as=64512 src=198.18.0.1 (node b)"},
		},
		{
			name: "mesh off and no reflector: external peers only",
			self: a, nodes: []*datastore.Node{a, b, c}, peers: []*datastore.BGPPeer{tor}, cfg: meshOff,
			want: []string{"198.18.0.254 External as=65000 src=198.18.0.1 (bgppeer tor)"},
		},
		{
			name: "reflector topology, client view: only the reflectors",
			self: a, nodes: []*datastore.Node{a, b, r1, r2},
			want: []string{
				"198.18.0.11 Reflector as=64512 src=198.18.0.1 (node r1)",
				"198.18.0.12 Reflector as=64512 src=198.18.0.1 (node r2)",
			},
		},
		{
			name: "reflector topology, reflector view: clients with our cluster ID, other reflectors plain",
			self: r1, nodes: []*datastore.Node{a, b, r1, r2},
			want: []string{
				"198.18.0.1 RRClient as=64512 passive rr=244.0.0.1 src=198.18.0.11 (node a)",
				"198.18.0.2 RRClient as=64512 passive rr=244.0.0.1 src=198.18.0.11 (node b)",
				"198.18.0.12 Reflector as=64512 src=198.18.0.11 (node r2)",
			},
		},
		{
			name: "reflectors win over nodeToNodeMesh=false",
			self: b, nodes: []*datastore.Node{a, b, r1}, cfg: meshOff,
			want: []string{"198.18.0.11 Reflector as=64512 src=198.18.0.2 (node r1)"},
		},
		{
			name: "self as the only reflector, not in the node list",
			self: r1, nodes: []*datastore.Node{a},
			want: []string{"198.18.0.1 RRClient as=64512 passive rr=244.0.0.1 src=198.18.0.11 (node a)"},
		},
		{
			name: "a client of another AS gets an eBGP session, not reflection",
			self: r1, nodes: []*datastore.Node{r1, node("a", "198.18.0.1", nodeASN(65001))},
			want: []string{"198.18.0.1 RRClient as=65001 passive src=198.18.0.11 (node a)"},
		},
		{
			name: "BGPPeers: everyone, by node name, by selector; eBGP or iBGP by AS; MD5",
			self: node("a", "198.18.0.1", labels("rack", "r1")), nodes: []*datastore.Node{b},
			peers: []*datastore.BGPPeer{
				bgpPeer("all", "198.18.1.1", 65000, password("s3cret")),
				bgpPeer("mine", "198.18.1.2", 64512, onNode("a")),
				bgpPeer("theirs", "198.18.1.3", 65000, onNode("b")),
				bgpPeer("rack1", "198.18.1.4", 65001, selecting(`rack == "r1"`)),
				bgpPeer("rack2", "198.18.1.5", 65002, selecting(`rack == "r2"`)),
				bgpPeer("broken-selector", "198.18.1.6", 65003, selecting(`rack ==`)),
				bgpPeer("broken-ip", "not-an-ip", 65004),
				bgpPeer("has-rack", "198.18.1.7", 65005, selecting(`has(rack)`)),
			},
			want: []string{
				"198.18.0.2 Mesh as=64512 src=198.18.0.1 (node b)",
				"198.18.1.1 External as=65000 md5=s3cret src=198.18.0.1 (bgppeer all)",
				"198.18.1.2 External as=64512 src=198.18.0.1 (bgppeer mine)",
				"198.18.1.4 External as=65001 src=198.18.0.1 (bgppeer rack1)",
				"198.18.1.7 External as=65005 src=198.18.0.1 (bgppeer has-rack)",
			},
		},
		{
			name: "duplicates: node session beats a BGPPeer, first BGPPeer by name wins, never self",
			self: a, nodes: []*datastore.Node{a, b},
			peers: []*datastore.BGPPeer{
				bgpPeer("z-dup", "198.18.1.1", 65009),
				bgpPeer("a-dup", "198.18.1.1", 65001),
				bgpPeer("node-b", "198.18.0.2", 65000),
				bgpPeer("self", "198.18.0.1", 65000),
			},
			want: []string{
				"198.18.0.2 Mesh as=64512 src=198.18.0.1 (node b)",
				"198.18.1.1 External as=65001 src=198.18.0.1 (bgppeer a-dup)",
			},
		},
		{
			name:  "IPv6 BGPPeer sourced from the node's IPv6 address",
			self:  node("a", "198.18.0.1", ipv6("fd00:198:18::1")),
			peers: []*datastore.BGPPeer{bgpPeer("tor6", "fd00:198:18::fe", 65000)},
			want:  []string{"fd00:198:18::fe External as=65000 src=fd00:198:18::1 (bgppeer tor6)"},
		},
		{
			name: "no self: nothing",
			self: nil, nodes: []*datastore.Node{a, b}, peers: []*datastore.BGPPeer{tor},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := DesiredPeers(tc.self, tc.nodes, tc.peers, tc.cfg)
			var lines []string
			for _, p := range got {
				lines = append(lines, peerLine(p))
				if err := p.Validate(); err != nil {
					t.Errorf("DesiredPeers produced an invalid peer: %v", err)
				}
			}
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(lines, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// Whatever the order of the inputs, the output is the same.
func TestDesiredPeersOrderIndependent(t *testing.T) {
	nodes := []*datastore.Node{
		node("a", "198.18.0.1"), node("b", "198.18.0.2"), node("c", "198.18.0.3", reflector("244.0.0.1")),
		node("d", "198.18.0.4", reflector("244.0.0.1")), node("e", "198.18.0.5"),
	}
	peers := []*datastore.BGPPeer{bgpPeer("x", "198.18.1.1", 65000), bgpPeer("y", "198.18.1.1", 65001), bgpPeer("z", "198.18.1.2", 65000)}
	for _, self := range nodes {
		want := fmt.Sprint(DesiredPeers(self, nodes, peers, nil))
		for i := range 20 {
			n := append([]*datastore.Node(nil), nodes...)
			p := append([]*datastore.BGPPeer(nil), peers...)
			rot := i % len(n)
			n = append(n[rot:], n[:rot]...)
			if i%2 == 1 {
				p[0], p[1], p[2] = p[2], p[0], p[1]
			}
			if got := fmt.Sprint(DesiredPeers(self, n, p, nil)); got != want {
				t.Fatalf("self %s, permutation %d: %s, want %s", self.Metadata.Name, i, got, want)
			}
		}
	}
}

// Every pair of nodes agrees on its session: both sides list each other
// (or neither does), exactly one side is passive, and the types match up.
func TestDesiredPeersSymmetric(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []*datastore.Node
	}{
		{"mesh", []*datastore.Node{node("a", "198.18.0.1"), node("b", "198.18.0.2"), node("c", "198.18.0.3"), node("d", "198.18.0.4")}},
		{"reflectors", []*datastore.Node{node("a", "198.18.0.1"), node("b", "198.18.0.2"),
			node("c", "198.18.0.3", reflector("244.0.0.1")), node("d", "198.18.0.4", reflector("244.0.0.2"))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sessions := map[string]map[netip.Addr]Peer{}
			addr := map[string]netip.Addr{}
			for _, n := range tc.nodes {
				addr[n.Metadata.Name] = netip.MustParseAddr(n.Spec.Address)
				sessions[n.Metadata.Name] = map[netip.Addr]Peer{}
				for _, p := range DesiredPeers(n, tc.nodes, nil, nil) {
					sessions[n.Metadata.Name][p.Address] = p
				}
			}
			for _, x := range tc.nodes {
				for _, y := range tc.nodes {
					if x == y {
						continue
					}
					xy, okx := sessions[x.Metadata.Name][addr[y.Metadata.Name]]
					yx, oky := sessions[y.Metadata.Name][addr[x.Metadata.Name]]
					if okx != oky {
						t.Errorf("%s→%s listed %v, %s→%s listed %v", x.Metadata.Name, y.Metadata.Name, okx, y.Metadata.Name, x.Metadata.Name, oky)
						continue
					}
					if !okx {
						continue
					}
					if xy.Passive == yx.Passive {
						t.Errorf("%s and %s: both passive=%v", x.Metadata.Name, y.Metadata.Name, xy.Passive)
					}
					if xy.Type == PeerRRClient && yx.Type != PeerReflector {
						t.Errorf("%s reflects to %s, which sees it as %s", x.Metadata.Name, y.Metadata.Name, yx.Type)
					}
				}
			}
		})
	}
}

func TestGlobalFor(t *testing.T) {
	off := false
	tests := []struct {
		name    string
		self    *datastore.Node
		cfg     *datastore.BGPConfigSpec
		port    int
		want    string
		wantErr string
	}{
		{
			name: "defaults: AS 64512, port 179, graceful restart 120 s, IPv4",
			self: node("a", "198.18.0.1"),
			want: "as=64512 id=198.18.0.1 port=179 gr=true/2m0s families=[ipv4-unicast]",
		},
		{
			name: "BGPConfig settings",
			self: node("a", "198.18.0.1"),
			cfg: &datastore.BGPConfigSpec{ASNumber: 65100, ListenPort: 1790,
				GracefulRestart: &datastore.GracefulRestartSpec{Enabled: &off, RestartTimeSeconds: 30}},
			want: "as=65100 id=198.18.0.1 port=1790 gr=false/30s families=[ipv4-unicast]",
		},
		{
			name: "node AS, router ID and IPv6 address",
			self: node("a", "198.18.0.1", nodeASN(65001), ipv6("fd00::1"), func(n *datastore.Node) { n.Spec.RouterID = "10.0.0.1" }),
			want: "as=65001 id=10.0.0.1 port=179 gr=true/2m0s families=[ipv4-unicast ipv6-unicast]",
		},
		{
			name: "the agent's --bgp-port wins over BGPConfig unless it is the default",
			self: node("a", "198.18.0.1"), cfg: &datastore.BGPConfigSpec{ListenPort: 1790}, port: 1791,
			want: "as=64512 id=198.18.0.1 port=1791 gr=true/2m0s families=[ipv4-unicast]",
		},
		{
			name: "--bgp-port 179 defers to BGPConfig",
			self: node("a", "198.18.0.1"), cfg: &datastore.BGPConfigSpec{ListenPort: 1790}, port: 179,
			want: "as=64512 id=198.18.0.1 port=1790 gr=true/2m0s families=[ipv4-unicast]",
		},
		{name: "no address", self: node("a", ""), wantErr: "router ID is missing"},
		{name: "reserved AS", self: node("a", "198.18.0.1", nodeASN(23456)), wantErr: "reserved"},
		{name: "nil node", self: nil, wantErr: "no node"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := GlobalFor(tc.self, tc.cfg, tc.port)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("as=%d id=%s port=%d gr=%v/%s families=%v", g.ASN, g.RouterID, g.ListenPort,
				g.GracefulRestart.Enabled, g.GracefulRestart.RestartTime, g.Families)
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := Global{ASN: 64512, RouterID: ip("10.0.0.1")}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid global rejected: %v", err)
	}
	for _, tc := range []struct {
		g    Global
		want string
	}{
		{Global{ASN: 64512, RouterID: ip("0.0.0.0")}, "not a unicast"},
		{Global{ASN: 64512, RouterID: ip("239.1.1.1")}, "not a unicast"},
		{Global{ASN: 64512, RouterID: ip("255.255.255.255")}, "not a unicast"},
		{Global{ASN: 64512, RouterID: ip("fd00::1")}, "not an IPv4"},
		{Global{ASN: 64512}, "missing"},
		{Global{ASN: 23456, RouterID: ip("10.0.0.1")}, "reserved"},
		{Global{ASN: 64512, RouterID: ip("10.0.0.1"), ListenPort: 70000}, "listen port"},
		{Global{ASN: 64512, RouterID: ip("10.0.0.1"), ListenAddresses: []string{"x"}}, "listen address"},
		{Global{ASN: 64512, RouterID: ip("10.0.0.1"), GracefulRestart: GracefulRestart{RestartTime: 2 * time.Hour}}, "restart time"},
		{Global{ASN: 64512, RouterID: ip("10.0.0.1"), Families: []Family{9}}, "not supported"},
	} {
		if err := tc.g.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.g, err, tc.want)
		}
	}

	for _, tc := range []struct {
		p    Peer
		want string
	}{
		{Peer{ASN: 1}, "not a unicast"},
		{Peer{Address: ip("224.0.0.1"), ASN: 1}, "not a unicast"},
		{Peer{Address: ip("fe80::1%eth0"), ASN: 1}, "zone"},
		{Peer{Address: ip("10.0.0.2")}, "AS number"},
		{Peer{Address: ip("10.0.0.2"), ASN: 1, Port: -1}, "port"},
		{Peer{Address: ip("10.0.0.2"), ASN: 1, Password: strings.Repeat("x", 81)}, "80"},
		{Peer{Address: ip("10.0.0.2"), ASN: 1, RRClusterID: "one"}, "cluster ID"},
		{Peer{Address: ip("10.0.0.2"), ASN: 1, LocalAddress: ip("fd00::1")}, "local address"},
	} {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.p, err, tc.want)
		}
	}
}
