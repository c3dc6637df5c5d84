package bgpfake

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/calyx-net/calyx/bgp"
)

func TestFakeRecordsAndPlays(t *testing.T) {
	ctx := context.Background()
	f := New()
	if err := f.Start(ctx, bgp.Global{ASN: 64512}); err == nil {
		t.Error("Start accepted a global without router ID")
	}
	if err := f.Start(ctx, bgp.Global{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	peers := []bgp.Peer{{Address: netip.MustParseAddr("10.0.0.2"), ASN: 64512, Type: bgp.PeerMesh}}
	if err := f.SetPeers(ctx, peers); err != nil {
		t.Fatal(err)
	}
	f.FailNext(MethodSetAdvertisements, errors.New("boom"))
	if err := f.SetAdvertisements(ctx, []bgp.Advertisement{{Prefix: netip.MustParsePrefix("10.244.0.0/26")}}); err == nil {
		t.Error("injected error not returned")
	}
	advs := []bgp.Advertisement{
		{Prefix: netip.MustParsePrefix("10.244.1.0/26")},
		{Prefix: netip.MustParsePrefix("10.244.0.0/26")},
	}
	if err := f.SetAdvertisements(ctx, advs); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(f.Advertisements()); got != "[{10.244.0.0/26 invalid IP []} {10.244.1.0/26 invalid IP []}]" {
		t.Errorf("advertisements %s", got)
	}
	if p, a := f.Calls(); p != 1 || a != 1 {
		t.Errorf("calls %d, %d; want 1, 1", p, a)
	}

	p1, p2 := netip.MustParsePrefix("10.244.5.0/26"), netip.MustParsePrefix("10.244.6.0/26")
	nh := netip.MustParseAddr("10.0.0.2")
	f.Learn(p1, nh)
	var got []bgp.LearnedUpdate
	f.Subscribe(func(u bgp.LearnedUpdate) { got = append(got, u) })
	f.Learn(p2, nh)
	f.Withdraw(p1)
	f.Withdraw(p1) // not learned any more: no update
	if len(got) != 3 || len(got[0].Routes[p1]) != 1 || len(got[1].Routes[p2]) != 1 || len(got[2].Routes[p1]) != 0 {
		t.Errorf("updates %v", got)
	}
	if l, _ := f.Learned(ctx); len(l) != 1 || len(l[p2]) != 1 {
		t.Errorf("learned %v", l)
	}

	select {
	case <-f.InitialSyncDone():
		t.Error("initial sync done before FinishInitialSync")
	default:
	}
	f.FinishInitialSync()
	f.FinishInitialSync()
	<-f.InitialSyncDone()

	f.Close(true)
	if c, g := f.Closed(); !c || !g {
		t.Errorf("Closed() = %v, %v", c, g)
	}
	f.Learn(p1, nh)
	if len(got) != 3 {
		t.Error("subscriber called after Close")
	}
}
