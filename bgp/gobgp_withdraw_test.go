package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/calyx-net/calyx/internal/testutil"
)

// updatesFrom counts the UPDATE messages s has received from peer.
func (s *testSpeaker) updatesFrom(t testing.TB, peer netip.Addr) uint64 {
	t.Helper()
	g, ok := s.Speaker.(*goBGP)
	if !ok {
		t.Fatalf("speaker is a %T, not GoBGP", s.Speaker)
	}
	srv, err := g.server()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	found := false
	err = srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: peer.String()}, func(p *api.Peer) {
		n, found = p.GetState().GetMessages().GetReceived().GetUpdate(), true
	})
	if err != nil || !found {
		t.Fatalf("%s: peer %s: found=%v err=%v", s.addr, peer, found, err)
	}
	return n
}

// A ToR's withdrawals stop at the node that learned its routes: GoBGP
// keeps no Adj-RIB-Out and would withdraw each prefix again towards every
// mesh peer, which never got it (a storm of single-prefix UPDATEs when a
// ToR drops a large table). The RIB still shows the path as received.
func TestGoBGPExternalWithdrawalsStayLocal(t *testing.T) {
	n := loopbackNet(3)
	port := freePort(t, n...)
	a := startSpeaker(t, n[0], port, speakerOpts{})
	b := startSpeaker(t, n[1], port, speakerOpts{})
	x := startSpeaker(t, n[2], port, speakerOpts{asn: 65000, policy: &Policy{}}) // a ToR
	a.setPeers(t, a.peerTo(b, PeerMesh))
	b.setPeers(t, b.peerTo(a, PeerMesh), b.peerTo(x, PeerExternal))
	x.setPeers(t, x.peerTo(b, PeerExternal))
	b.advertise(t, Advertisement{Prefix: pfx("10.244.2.0/26"), NextHop: b.addr})
	var advs []Advertisement
	want := map[netip.Prefix][]netip.Addr{}
	for i := range 50 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 32)
		advs = append(advs, Advertisement{Prefix: p, NextHop: x.addr})
		want[p] = addrs(x.addr)
	}
	x.advertise(t, advs...)
	testutil.Eventually(t, 20*time.Second, "B learns X's prefixes", func() error {
		return routesEqual(b.subscribed(), want)
	})
	testutil.Eventually(t, 10*time.Second, "A learns B's block", func() error {
		return routesEqual(a.subscribed(), routes("10.244.2.0/26", addrs(b.addr)))
	})

	rib, err := b.RIB(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rib {
		if e.Prefix == advs[0].Prefix && !slices.Equal(e.ASPath, []uint32{65000}) {
			t.Errorf("B's RIB shows %s with AS path %v, want [65000] as X sent it", e.Prefix, e.ASPath)
		}
	}

	before := a.updatesFrom(t, b.addr)
	x.advertise(t)
	testutil.Eventually(t, 10*time.Second, "B forgets X's prefixes", func() error {
		if got := b.subscribed(); len(got) != 0 {
			return fmt.Errorf("B still has %d prefixes", len(got))
		}
		return nil
	})
	// B's own block going away afterwards is a message A must get: once it
	// has, every UPDATE B sent before it has arrived too.
	b.advertise(t)
	testutil.Eventually(t, 10*time.Second, "A loses B's block", func() error {
		if got := a.subscribed(); len(got) != 0 {
			return fmt.Errorf("A still has %v", got)
		}
		return nil
	})
	if got := a.updatesFrom(t, b.addr) - before; got != 1 {
		t.Errorf("A received %d UPDATEs from B while X withdrew 50 prefixes and B its block; want 1 (the block)", got)
	}
}
