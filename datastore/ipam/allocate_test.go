package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
)

func TestAllocateIsIdempotentAndRecordsEverything(t *testing.T) {
	c := newCluster(t)
	c.pool("pool-a", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	im := c.ipam()

	req := Request{Handle: HandleID("c0ffee", "eth0"), Node: "n1", Attrs: Attributes{Namespace: "default", Pod: "web-1", Endpoint: "n1-c0ffee-eth0"}}
	got, err := im.Allocate(c.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Bits() != 32 || !netip.MustParsePrefix("10.244.0.0/24").Contains(got[0].Addr()) {
		t.Fatalf("Allocate = %v, want one /32 of 10.244.0.0/24", got)
	}
	again, err := im.Allocate(c.ctx, req)
	if err != nil || !slices.Equal(again, got) {
		t.Fatalf("repeated Allocate = %v, %v; want %v", again, err, got)
	}
	// A second IPAM (another process) asking the same: the same answer.
	other, err := c.ipam().Allocate(c.ctx, req)
	if err != nil || !slices.Equal(other, got) {
		t.Fatalf("Allocate from another IPAM = %v, %v; want %v", other, err, got)
	}

	blocks, handles := c.state()
	if len(blocks) != 1 || len(handles) != 1 {
		t.Fatalf("etcd holds %d blocks and %d handles, want 1 and 1", len(blocks), len(handles))
	}
	for cidr, b := range blocks {
		if cidr.Bits() != 26 || b.Affinity != "n1" || b.Used() != 1 {
			t.Fatalf("block %s affinity %q used %d, want a /26 of n1 with 1 address", cidr, b.Affinity, b.Used())
		}
		a, ok := b.Lookup(got[0].Addr())
		if !ok || a.Handle != req.Handle || a.Node != "n1" || a.Attributes != req.Attrs || a.Borrowed {
			t.Fatalf("allocation = %+v, want handle, node and attributes of the request, not borrowed", a)
		}
	}
	h := handles[req.Handle]
	if h == nil || h.Node != "n1" || h.Endpoint != req.Attrs.Endpoint || len(h.Addresses) != 1 || h.Addresses[0].IP != got[0].Addr() {
		t.Fatalf("handle record = %+v", h)
	}

	if err := im.Release(c.ctx, req.Handle); err != nil {
		t.Fatal(err)
	}
	if err := im.Release(c.ctx, req.Handle); err != nil {
		t.Fatalf("second Release: %v, want nil (idempotent)", err)
	}
	if err := c.ipam().Release(c.ctx, req.Handle); err != nil {
		t.Fatalf("Release from another IPAM: %v, want nil", err)
	}
	blocks, handles = c.state()
	if len(handles) != 0 {
		t.Fatalf("handles left after release: %v", handles)
	}
	for _, b := range blocks {
		if !b.Empty() {
			t.Fatalf("block %s still holds %v", b.Prefix, b.Allocations)
		}
	}
	// The next allocation does not reuse the address just freed.
	next, err := im.Allocate(c.ctx, Request{Handle: "other.eth0", Node: "n1"})
	if err != nil || next[0] == got[0] {
		t.Fatalf("Allocate after release = %v, %v; want a fresh address, not %v", next, err, got[0])
	}
}

func TestDualStackGivesOneAddressPerFamily(t *testing.T) {
	c := newCluster(t)
	c.pool("v4", "10.244.0.0/16", 0, "")
	c.pool("v6", "fd00:244::/64", 0, "")
	c.node("n1", nil)
	im := c.ipam()

	got, err := im.Allocate(c.ctx, Request{Handle: "a.eth0", Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Addr().Is4() || got[0].Bits() != 32 || !got[1].Addr().Is6() || got[1].Bits() != 128 {
		t.Fatalf("Allocate = %v, want a /32 then a /128", got)
	}
	blocks, _ := c.state()
	for cidr := range blocks {
		if cidr.Addr().Is6() && cidr.Bits() != 122 || cidr.Addr().Is4() && cidr.Bits() != 26 {
			t.Fatalf("block %s has a non-default size", cidr)
		}
	}
	only6, err := im.Allocate(c.ctx, Request{Handle: "b.eth0", Node: "n1", Families: []Family{V6}})
	if err != nil || len(only6) != 1 || !only6[0].Addr().Is6() {
		t.Fatalf("IPv6-only Allocate = %v, %v", only6, err)
	}
	// Release frees both families in one go.
	if err := im.Release(c.ctx, "a.eth0"); err != nil {
		t.Fatal(err)
	}
	blocks, handles := c.state()
	used := 0
	for _, b := range blocks {
		used += b.Used()
	}
	if used != 1 || len(handles) != 1 {
		t.Fatalf("after release: %d addresses, %d handles; want 1 and 1", used, len(handles))
	}
}

func TestPoolNodeSelectorAndConfigChanges(t *testing.T) {
	c := newCluster(t)
	c.pool("rack-a", "10.244.0.0/24", 26, `rack == "a"`)
	c.node("n1", map[string]string{"rack": "b"})
	im := c.ipam()

	_, err := im.Allocate(c.ctx, Request{Handle: "x.eth0", Node: "n1"})
	if !errors.Is(err, ErrNoPoolForNode) {
		t.Fatalf("Allocate on a node no pool selects: %v, want ErrNoPoolForNode", err)
	}
	// The IPAM read the pools already; a new pool must still be seen.
	c.pool("rack-b", "10.245.0.0/24", 26, `rack == "b"`)
	got, err := im.Allocate(c.ctx, Request{Handle: "x.eth0", Node: "n1"})
	if err != nil || !netip.MustParsePrefix("10.245.0.0/24").Contains(got[0].Addr()) {
		t.Fatalf("Allocate after adding a pool for the node = %v, %v", got, err)
	}
	// Relabelling the node moves new allocations to the other pool.
	c.node("n1", map[string]string{"rack": "a"})
	got, err = im.Allocate(c.ctx, Request{Handle: "y.eth0", Node: "n1"})
	if err != nil || !netip.MustParsePrefix("10.244.0.0/24").Contains(got[0].Addr()) {
		t.Fatalf("Allocate after relabelling = %v, %v; want an address of rack-a", got, err)
	}
}

func TestSpecificAddresses(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	c.node("n2", nil)
	im := c.ipam()

	ip := netip.MustParseAddr("10.244.0.77")
	got, err := im.Allocate(c.ctx, Request{Handle: "s.eth0", Node: "n1", IPs: []netip.Addr{ip}})
	if err != nil || len(got) != 1 || got[0].Addr() != ip {
		t.Fatalf("Allocate of %s = %v, %v", ip, got, err)
	}
	if again, err := im.Allocate(c.ctx, Request{Handle: "s.eth0", Node: "n1", IPs: []netip.Addr{ip}}); err != nil || again[0].Addr() != ip {
		t.Fatalf("repeated Allocate of %s = %v, %v", ip, again, err)
	}
	if _, err := c.ipam().Allocate(c.ctx, Request{Handle: "t.eth0", Node: "n2", IPs: []netip.Addr{ip}}); !errors.Is(err, ErrAddressInUse) {
		t.Fatalf("Allocate of a taken address: %v, want ErrAddressInUse", err)
	}
	if _, err := im.Allocate(c.ctx, Request{Handle: "u.eth0", Node: "n1", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}); !errors.Is(err, ErrOutsidePools) {
		t.Fatalf("Allocate outside the pools: %v, want ErrOutsidePools", err)
	}
	// An address of n1's block asked by n2 is borrowed.
	ip2 := netip.MustParseAddr("10.244.0.78")
	if _, err := c.ipam().Allocate(c.ctx, Request{Handle: "v.eth0", Node: "n2", IPs: []netip.Addr{ip2}}); err != nil {
		t.Fatal(err)
	}
	blocks, _ := c.state()
	b := blocks[blockOf(ip2, 26)]
	if b.Affinity != "n1" || !slices.Equal(b.BorrowedBy("n2"), []netip.Addr{ip2}) {
		t.Fatalf("block %s affinity %q borrowed by n2 %v; want n1's block with %s borrowed", b.Prefix, b.Affinity, b.BorrowedBy("n2"), ip2)
	}
	// With strictAffinity that is refused.
	c.config(true, 0)
	if _, err := c.ipam().Allocate(c.ctx, Request{Handle: "w.eth0", Node: "n2", IPs: []netip.Addr{netip.MustParseAddr("10.244.0.79")}}); !errors.Is(err, ErrBorrowForbidden) {
		t.Fatalf("strict borrow of a specific address: %v, want ErrBorrowForbidden", err)
	}
	// An address in no block yet claims its block for the node.
	ip3 := netip.MustParseAddr("10.244.0.200")
	if _, err := c.ipam().Allocate(c.ctx, Request{Handle: "x.eth0", Node: "n2", IPs: []netip.Addr{ip3}}); err != nil {
		t.Fatal(err)
	}
	blocks, _ = c.state()
	if b := blocks[blockOf(ip3, 26)]; b == nil || b.Affinity != "n2" {
		t.Fatalf("block of %s = %+v, want claimed by n2", ip3, b)
	}
}

func TestMaxBlocksPerHostAndBorrowing(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/26", 28, "") // 4 blocks of 16
	c.node("n1", nil)
	c.node("n2", nil)
	c.config(true, 1)
	n1, n2 := c.ipam(), c.ipam()

	// n2 takes one block and uses one address of it.
	if _, err := n2.Allocate(c.ctx, Request{Handle: "n2-0", Node: "n2"}); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 16; k++ {
		if _, err := n1.Allocate(c.ctx, Request{Handle: "n1-" + strconv.Itoa(k), Node: "n1"}); err != nil {
			t.Fatalf("allocation %d: %v", k, err)
		}
	}
	_, err := n1.Allocate(c.ctx, Request{Handle: "n1-16", Node: "n1"})
	if !errors.Is(err, ErrMaxBlocks) {
		t.Fatalf("17th allocation with maxBlocksPerHost 1, strict: %v, want ErrMaxBlocks", err)
	}
	t.Logf("error as the user sees it: %v", err)

	// Without strict affinity n1 borrows from n2's block.
	c.config(false, 1)
	got, err := n1.Allocate(c.ctx, Request{Handle: "n1-16", Node: "n1"})
	if err != nil {
		t.Fatalf("allocation with borrowing allowed: %v", err)
	}
	blocks, _ := c.state()
	b := blocks[blockOf(got[0].Addr(), 28)]
	if b.Affinity != "n2" || !slices.Equal(b.BorrowedBy("n1"), []netip.Addr{got[0].Addr()}) {
		t.Fatalf("borrowed %v from block %s (affinity %q, borrowed by n1 %v)", got, b.Prefix, b.Affinity, b.BorrowedBy("n1"))
	}
}

func TestTwoNodesRacingForTheLastBlock(t *testing.T) {
	var conflicts int64
	for round := 0; round < 5; round++ {
		c := newCluster(t)
		c.pool("p", "10.244.0.0/27", 28, "") // 2 blocks
		// Two node names whose search for a free block starts at the same
		// block, so they really race for it.
		names := sameStartNames(2)
		c.node(names[0], nil)
		c.node(names[1], nil)
		c.config(true, 0)
		ims := []*IPAM{c.ipam(), c.ipam()}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k := range ims {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[k] = ims[k].Allocate(c.ctx, Request{Handle: "h" + strconv.Itoa(k), Node: names[k]})
			}()
		}
		wg.Wait()
		if errors.Join(errs...) != nil {
			t.Fatalf("round %d: %v", round, errors.Join(errs...))
		}
		blocks, _ := c.state()
		owners := map[string]int{}
		for _, b := range blocks {
			owners[b.Affinity]++
		}
		if len(blocks) != 2 || owners[names[0]] != 1 || owners[names[1]] != 1 {
			t.Fatalf("round %d: blocks %v owned %v; want one block each", round, len(blocks), owners)
		}
		conflicts += ims[0].conflicts.Load() + ims[1].conflicts.Load()
	}
	t.Logf("transactions that lost the race in 5 rounds: %d", conflicts)
}

// sameStartNames finds node names whose claim search starts at the same
// block of a two-block pool.
func sameStartNames(n int) []string {
	var out []string
	pool := &poolInfo{cidr: netip.MustParsePrefix("10.244.0.0/27"), blockBits: 28}
	var want netip.Prefix
	for k := 0; len(out) < n; k++ {
		name := "node-" + strconv.Itoa(k)
		got, _ := freeBlock(pool, map[netip.Prefix]bool{}, &plan{}, name)
		if len(out) == 0 {
			want = got
		}
		if got == want {
			out = append(out, name)
		}
	}
	return out
}

// A repeated ADD racing with the first one (two processes, or a runtime
// retrying) must still give one set of addresses.
func TestSameHandleRacingGetsOneAllocation(t *testing.T) {
	c := newCluster(t)
	c.pool("v4", "10.244.0.0/24", 26, "")
	c.pool("v6", "fd00:244::/64", 122, "")
	c.node("n1", nil)
	ims := []*IPAM{c.ipam(), c.ipam(), c.ipam()}
	const handles = 30
	results := make([][][]netip.Prefix, len(ims))
	var wg sync.WaitGroup
	for k, im := range ims {
		results[k] = make([][]netip.Prefix, handles)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range handles {
				got, err := im.Allocate(c.ctx, Request{Handle: "same-" + strconv.Itoa(h), Node: "n1"})
				if err != nil {
					t.Error(err)
					return
				}
				results[k][h] = got
			}
		}()
	}
	wg.Wait()
	for h := range handles {
		for k := 1; k < len(ims); k++ {
			if !slices.Equal(results[k][h], results[0][h]) {
				t.Fatalf("handle same-%d: IPAM 0 got %v, IPAM %d got %v", h, results[0][h], k, results[k][h])
			}
		}
	}
	blocks, hs := c.state()
	used := 0
	for _, b := range blocks {
		used += b.Used()
	}
	if used != 2*handles || len(hs) != handles {
		t.Fatalf("%d addresses and %d handles in etcd, want %d and %d", used, len(hs), 2*handles, handles)
	}
	if p := structuralProblems(c); len(p) > 0 {
		t.Fatalf("inconsistent records: %+v", p)
	}
}
