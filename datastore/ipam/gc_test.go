package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func kinds(ps []Problem) map[string]int {
	out := map[string]int{}
	for _, p := range ps {
		out[p.Kind]++
	}
	return out
}

func TestGCReleasesLeakedAllocationAndKeepsLiveOnes(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	c.node("n2", nil)
	im := c.ipam()

	live, err := im.Allocate(c.ctx, Request{Handle: "live.eth0", Node: "n1", Attrs: Attributes{Endpoint: "ep-live"}})
	if err != nil {
		t.Fatal(err)
	}
	c.endpoint("ep-live", "n1", live)
	leak, err := im.Allocate(c.ctx, Request{Handle: "leak.eth0", Node: "n1", Attrs: Attributes{Endpoint: "ep-leak"}})
	if err != nil {
		t.Fatal(err)
	}

	problems, err := im.Check(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Kind != ProblemLeakedAllocation || problems[0].Subject != "leak.eth0" || !problems[0].GCRepairs {
		t.Fatalf("Check = %+v, want one gc-repairable leaked allocation of leak.eth0", problems)
	}

	// Younger than the grace period: kept.
	rep, err := im.GC(c.ctx, time.Hour)
	if err != nil || !rep.Empty() {
		t.Fatalf("GC with a 1h grace = %+v, %v; want nothing done", rep, err)
	}
	// Another node's gc leaves n1's handles alone.
	if rep, err := im.GCNode(c.ctx, "n2", 0); err != nil || !rep.Empty() {
		t.Fatalf("GCNode(n2) = %+v, %v; want nothing done", rep, err)
	}
	// n1's agent says no workload of the leak exists.
	im.SetInUse("n1", func(h *Handle) bool { return h.ID == "live.eth0" })
	rep, err = im.GCNode(c.ctx, "n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Released) != 1 || rep.Released[0].Handle != "leak.eth0" || !slices.Equal(rep.Released[0].Addresses, []netip.Addr{leak[0].Addr()}) {
		t.Fatalf("GC report = %+v, want leak.eth0 (%v) released", rep, leak)
	}
	blocks, handles := c.state()
	if handles["live.eth0"] == nil || handles["leak.eth0"] != nil {
		t.Fatalf("handles after gc: %v; want live.eth0 only", handles)
	}
	b := blocks[blockOf(live[0].Addr(), 26)]
	if _, ok := b.Lookup(live[0].Addr()); !ok {
		t.Fatalf("gc freed the live address %s", live[0])
	}
	if _, ok := b.Lookup(leak[0].Addr()); ok {
		t.Fatalf("gc left the leaked address %s allocated", leak[0])
	}
	if problems, _ := im.Check(c.ctx); len(problems) != 0 {
		t.Fatalf("Check after gc = %+v, want none", problems)
	}
}

func TestCheckFindsInconsistenciesAndGCRepairsThem(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	im := c.ipam()
	etcd := c.ds.Etcd()

	var addrs []netip.Prefix
	for _, h := range []string{"h1", "h2", "h3"} {
		got, err := im.Allocate(c.ctx, Request{Handle: h, Node: "n1", Attrs: Attributes{Endpoint: "ep-" + h}})
		if err != nil {
			t.Fatal(err)
		}
		c.endpoint("ep-"+h, "n1", got)
		addrs = append(addrs, got[0])
	}
	block := blockOf(addrs[0].Addr(), 26)
	// A block claimed by a node that is not registered, emptied again.
	if _, err := im.Allocate(c.ctx, Request{Handle: "ghost", Node: "gone", Attrs: Attributes{Endpoint: "ep-ghost"}}); err != nil {
		t.Fatal(err)
	}
	if err := im.Release(c.ctx, "ghost"); err != nil {
		t.Fatal(err)
	}

	// Break things the way a crash, a bug or a hand edit could.
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := etcd.Delete(c.ctx, HandleKey("h1")) // allocation-without-handle
	mustDo(err)
	// The block does not name h1 (the compact layout): gc rebuilds the
	// record from the endpoint, under the attachment's handle.
	c.attachment("ep-h1", "n1", "cid-h1", "eth0", addrs[:1])
	_, err = etcd.Delete(c.ctx, AffinityKey("n1", block)) // block-without-affinity-key
	mustDo(err)
	stray := netip.MustParsePrefix("10.244.0.192/26")
	_, err = etcd.Put(c.ctx, AffinityKey("n1", stray), `{"node":"n1"}`) // affinity-without-block
	mustDo(err)
	h2 := Handle{ID: "h2", Node: "n1", Attributes: Attributes{Endpoint: "ep-h2"}, Created: time.Now(),
		Addresses: []HandleAddress{{IP: addrs[1].Addr(), Block: block}, {IP: netip.MustParseAddr("10.244.0.60"), Block: block}}}
	v, _ := json.Marshal(h2)
	_, err = etcd.Put(c.ctx, HandleKey("h2"), string(v)) // handle-address-not-allocated
	mustDo(err)
	c.endpoint("ep-stale", "n1", []netip.Prefix{netip.MustParsePrefix("10.244.0.61/32")}) // endpoint-without-allocation

	problems, err := im.Check(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := kinds(problems)
	want := map[string]int{
		ProblemAllocationWithoutHandle:   1,
		ProblemBlockWithoutAffinity:      1,
		ProblemAffinityWithoutBlock:      1,
		ProblemHandleAddressNotAllocated: 1,
		ProblemEndpointWithoutAllocation: 1,
		ProblemUnknownNode:               1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("Check found %d %s, want %d (all: %+v)", got[k], k, n, problems)
		}
	}
	if len(problems) != len(want) {
		t.Errorf("Check found %d problems, want %d: %+v", len(problems), len(want), problems)
	}

	rep, err := im.GC(c.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc report: %+v", rep)
	problems, err = im.Check(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Only the endpoint gc cannot fix (it is the agent's) remains.
	if len(problems) != 1 || problems[0].Kind != ProblemEndpointWithoutAllocation || problems[0].GCRepairs {
		t.Fatalf("Check after gc = %+v, want only the stale endpoint", problems)
	}
	_, handles := c.state()
	if h := handles[AttachmentHandle("n1", "cid-h1", "eth0")]; h == nil || len(h.Addresses) != 1 || h.Addresses[0].IP != addrs[0].Addr() || h.Endpoint != "ep-h1" || h.Node != "n1" {
		t.Errorf("handle of ep-h1 after gc = %+v, want its record rebuilt with %s", h, addrs[0])
	}
	if h := handles["h2"]; h == nil || len(h.Addresses) != 1 || h.Addresses[0].IP != addrs[1].Addr() {
		t.Errorf("handle h2 after gc = %+v, want only %s", h, addrs[1])
	}
	if handles["h3"] == nil {
		t.Errorf("gc released the healthy handle h3")
	}
}

func TestReleaseIPAndEmptyAffinities(t *testing.T) {
	c := newCluster(t)
	c.pool("v4", "10.244.0.0/24", 26, "")
	c.pool("v6", "fd00:244::/120", 122, "")
	c.node("n1", nil)
	im := c.ipam()

	got, err := im.Allocate(c.ctx, Request{Handle: "d.eth0", Node: "n1", Attrs: Attributes{Endpoint: "ep-d"}})
	if err != nil || len(got) != 2 {
		t.Fatalf("Allocate = %v, %v", got, err)
	}
	a, err := im.ReleaseIP(c.ctx, got[0].Addr())
	if err != nil || a.Handle != "d.eth0" || a.IP != got[0].Addr() {
		t.Fatalf("ReleaseIP(%s) = %+v, %v", got[0].Addr(), a, err)
	}
	_, handles := c.state()
	if h := handles["d.eth0"]; h == nil || len(h.Addresses) != 1 || h.Addresses[0].IP != got[1].Addr() {
		t.Fatalf("handle after releasing its IPv4 address: %+v", h)
	}
	if _, err := im.ReleaseIP(c.ctx, got[0].Addr()); !errors.Is(err, ErrNotAllocated) {
		t.Fatalf("second ReleaseIP: %v, want ErrNotAllocated", err)
	}
	if _, err := im.ReleaseIP(c.ctx, got[1].Addr()); err != nil {
		t.Fatal(err)
	}
	if _, handles := c.state(); len(handles) != 0 {
		t.Fatalf("handles left: %v", handles)
	}
	if problems, _ := im.Check(c.ctx); len(problems) != 0 {
		t.Fatalf("Check = %+v", problems)
	}

	// Both blocks are empty now: kept during the grace period, then given up.
	if rel, err := im.ReleaseEmptyAffinities(c.ctx, "n1", time.Hour); err != nil || len(rel) != 0 {
		t.Fatalf("ReleaseEmptyAffinities with 1h grace = %v, %v; want none", rel, err)
	}
	rel, err := im.ReleaseEmptyAffinities(c.ctx, "n1", 0)
	if err != nil || len(rel) != 2 {
		t.Fatalf("ReleaseEmptyAffinities = %v, %v; want both blocks", rel, err)
	}
	resp, err := c.ds.Etcd().Get(c.ctx, BlocksPrefix[:len(BlocksPrefix)-len("blocks/")], withPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("IPAM keys left: %d (%v)", len(resp.Kvs), err)
	}
	// The cached blocks are gone: the next allocation claims afresh.
	if _, err := im.Allocate(c.ctx, Request{Handle: "e.eth0", Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	if problems := structuralProblems(c); len(problems) != 0 {
		t.Fatalf("records after re-claiming: %+v", problems)
	}
}

func TestRunGCCleansUpPeriodically(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	im := c.ipam()
	if _, err := im.Allocate(c.ctx, Request{Handle: "leak", Node: "n1", Attrs: Attributes{Endpoint: "ep-leak"}}); err != nil {
		t.Fatal(err)
	}
	im.SetInUse("n1", func(*Handle) bool { return false })
	ctx, cancel := context.WithCancel(c.ctx)
	done := make(chan struct{})
	go func() { defer close(done); im.RunGC(ctx, "n1", 20*time.Millisecond, 0) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		// The leak is released, then its emptied block given up.
		resp, err := c.ds.Etcd().Get(c.ctx, BlocksPrefix[:len(BlocksPrefix)-len("blocks/")], withPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d IPAM keys still there after RunGC ran for 10s", resp.Count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
