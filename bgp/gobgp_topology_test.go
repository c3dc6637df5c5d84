package bgp

import (
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/testutil"
)

func testNode(name string, addr string, labels map[string]string) *datastore.Node {
	n := &datastore.Node{Spec: datastore.NodeSpec{Address: addr}}
	n.Metadata.Name, n.Metadata.Labels = name, labels
	return n
}

// The peers DesiredPeers computes run as real sessions: node r reflects,
// a and c are its clients and do not peer with each other, yet each learns
// the other's block with the originator as next hop.
func TestGoBGPRouteReflectorFromDesiredPeers(t *testing.T) {
	n := loopbackNet(3)
	port := freePort(t, n...)
	cfg := &datastore.BGPConfigSpec{ListenPort: port}
	nodeA := testNode("a", n[0].String(), nil)
	nodeR := testNode("r", n[1].String(), nil)
	nodeR.Spec.RouteReflectorClusterID = "244.0.0.1"
	nodeC := testNode("c", n[2].String(), nil)
	nodes := []*datastore.Node{nodeA, nodeR, nodeC}

	speakers := map[string]*testSpeaker{}
	for _, node := range nodes {
		g, err := GlobalFor(node, cfg, 0)
		if err != nil {
			t.Fatal(err)
		}
		s := startSpeaker(t, g.RouterID, g.ListenPort, speakerOpts{asn: g.ASN, gr: true})
		peers := DesiredPeers(node, nodes, nil, cfg)
		s.setPeers(t, peers...)
		speakers[node.Metadata.Name] = s
	}
	a, r, c := speakers["a"], speakers["r"], speakers["c"]
	if st, err := a.peerState(c.addr); err == nil {
		t.Fatalf("client a peers with client c: %+v", st)
	}
	r.waitEstablished(t, a.addr, 20*time.Second)
	r.waitEstablished(t, c.addr, 20*time.Second)
	if st, _ := r.peerState(a.addr); st.Type != PeerRRClient {
		t.Errorf("reflector's peer a has type %s, want RRClient", st.Type)
	}

	a.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: a.addr})
	c.advertise(t, Advertisement{Prefix: pfx("10.244.3.0/26"), NextHop: c.addr})
	r.advertise(t, Advertisement{Prefix: pfx("10.244.2.0/26"), NextHop: r.addr})
	testutil.Eventually(t, 10*time.Second, "client c learns a's block through the reflector", func() error {
		return routesEqual(c.subscribed(), routes("10.244.1.0/26", addrs(a.addr), "10.244.2.0/26", addrs(r.addr)))
	})
	testutil.Eventually(t, 10*time.Second, "client a learns c's block through the reflector", func() error {
		return routesEqual(a.subscribed(), routes("10.244.3.0/26", addrs(c.addr), "10.244.2.0/26", addrs(r.addr)))
	})
	// a's own block, reflected back to it, is not a learned route.
	testutil.Eventually(t, 5*time.Second, "reflector learns both clients", func() error {
		return routesEqual(r.subscribed(), routes("10.244.1.0/26", addrs(a.addr), "10.244.3.0/26", addrs(c.addr)))
	})
}

// Paths learned over eBGP are not passed on: B learns the external
// speaker X's prefix but does not announce it to its iBGP peer A, which
// would make the node a transit router.
func TestGoBGPNoTransitOfExternalRoutes(t *testing.T) {
	n := loopbackNet(3)
	port := freePort(t, n...)
	a := startSpeaker(t, n[0], port, speakerOpts{})
	b := startSpeaker(t, n[1], port, speakerOpts{})
	x := startSpeaker(t, n[2], port, speakerOpts{asn: 65000, policy: &Policy{}}) // a ToR
	a.setPeers(t, a.peerTo(b, PeerMesh))
	b.setPeers(t, b.peerTo(a, PeerMesh), b.peerTo(x, PeerExternal))
	x.setPeers(t, x.peerTo(b, PeerExternal))
	x.advertise(t, Advertisement{Prefix: pfx("198.51.100.0/24"), NextHop: x.addr})
	b.advertise(t, Advertisement{Prefix: pfx("10.244.2.0/26"), NextHop: b.addr})
	testutil.Eventually(t, 20*time.Second, "B learns X's prefix", func() error {
		return routesEqual(b.subscribed(), routes("198.51.100.0/24", addrs(x.addr)))
	})
	testutil.Eventually(t, 10*time.Second, "X learns B's block (eBGP, next hop B)", func() error {
		return routesEqual(x.subscribed(), routes("10.244.2.0/26", addrs(b.addr)))
	})
	testutil.Eventually(t, 10*time.Second, "A learns B's block", func() error {
		return routesEqual(a.subscribed(), routes("10.244.2.0/26", addrs(b.addr)))
	})
	time.Sleep(500 * time.Millisecond)
	if got := a.subscribed(); len(got) != 1 {
		t.Errorf("A learned %v; B must not pass X's route on", got)
	}
}
