package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// A cluster upgraded in place holds blocks in the legacy layout (every
// allocation in full). The new binary must read them, allocate around what
// they hold from several allocators at once, release their handles and
// rewrite them compactly without losing an address, a borrow or a handle.
func TestLegacyBlocksUpgradeInPlace(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	c.node("n2", nil)
	etcd := c.ds.Etcd()

	// What the previous binary left: ten of n1's workloads, one address n2
	// borrowed, and one entry whose handle record was lost (its endpoint
	// is gone): written by this binary, then turned into the legacy layout.
	old := c.ipam()
	legacy := map[netip.Addr]string{}
	for k := 0; k < 12; k++ {
		h := fmt.Sprintf("old%02d", k)
		got, err := old.Allocate(c.ctx, Request{Handle: h, Node: "n1", Attrs: Attributes{Endpoint: "ep-" + h}})
		if err != nil {
			t.Fatal(err)
		}
		if k != 11 {
			c.endpoint("ep-"+h, "n1", got)
		}
		legacy[got[0].Addr()] = h
	}
	st, err := readState(c.ctx, etcd)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.blocks) != 1 {
		t.Fatalf("%d blocks, want 1", len(st.blocks))
	}
	var cidr netip.Prefix
	var b *Block
	for cidr, b = range st.blocks {
	}
	borrowedIP := b.Allocations[10].IP
	b.Allocations[10].Node, b.Allocations[10].Borrowed = "n2", true
	h := st.handles["old10"]
	h.Node = "n2"
	hv, _ := json.Marshal(h)
	lv, err := json.Marshal(b) // the legacy encoding: the Block as JSON
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(lv), `"handle":"old03"`) {
		t.Fatalf("not the legacy layout: %s", lv)
	}
	for key, val := range map[string]string{BlockKey(cidr): string(lv), HandleKey("old10"): string(hv)} {
		if _, err := etcd.Put(c.ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := etcd.Delete(c.ctx, HandleKey("old11")); err != nil {
		t.Fatal(err)
	}

	// The agents' syncer reads the legacy block: the borrow is there.
	if src, err := BlockSource().Decode(BlockKey(cidr), lv); err != nil {
		t.Fatal(err)
	} else if got := src.(*Block).BorrowedBy("n2"); len(got) != 1 || got[0] != borrowedIP {
		t.Fatalf("legacy block: BorrowedBy(n2) = %v, want %s", got, borrowedIP)
	}

	// New binaries on three nodes' worth of allocators fill the block.
	led := newLedger()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for a := 0; a < 3; a++ {
		im := c.ipam()
		wg.Add(1)
		go func(a int) {
			defer wg.Done()
			for k := a; k < 52; k += 3 {
				hid := AttachmentHandle("n1", fmt.Sprintf("new%02d", k), "eth0")
				got, err := im.Allocate(c.ctx, Request{Handle: hid, Node: "n1"})
				if err != nil {
					errs <- err
					return
				}
				led.record(hid, got)
			}
		}(a)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(led.dups) > 0 {
		t.Fatalf("duplicates: %v", led.dups)
	}
	for ip, hid := range led.addrs {
		if prev, ok := legacy[ip]; ok {
			t.Errorf("%s handed to %s but the legacy block gave it to %s", ip, hid, prev)
		}
		if !cidr.Contains(ip) {
			t.Errorf("%s is outside %s: the legacy block's 52 free addresses were not used", ip, cidr)
		}
	}

	resp, err := etcd.Get(c.ctx, BlockKey(cidr))
	if err != nil {
		t.Fatal(err)
	}
	stored := string(resp.Kvs[0].Value)
	if !strings.Contains(stored, `"v":2`) || strings.Contains(stored, "old03") || len(stored) > 300 {
		t.Fatalf("the block was not rewritten in the compact layout (%d B): %s", len(stored), stored)
	}
	st, err = readState(c.ctx, etcd)
	if err != nil {
		t.Fatal(err)
	}
	nb := st.blocks[cidr]
	if nb.Used() != 64 {
		t.Fatalf("block holds %d addresses, want 64", nb.Used())
	}
	for ip, hid := range legacy {
		a, ok := nb.Lookup(ip)
		want := hid
		if hid == "old11" {
			want = "" // its record was lost before the upgrade
		}
		if !ok || a.Handle != want {
			t.Errorf("legacy %s: allocation %+v, want held by %q", ip, a, want)
		}
	}
	if got := nb.BorrowedBy("n2"); len(got) != 1 || got[0] != borrowedIP {
		t.Fatalf("after the rewrite BorrowedBy(n2) = %v, want %s", got, borrowedIP)
	}

	// A legacy handle is released by its DEL; the lost one is freed by gc.
	if err := c.ipam().ReleaseAttachment(c.ctx, "n1", "old03", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.ipam().Release(c.ctx, "old03"); err != nil {
		t.Fatal(err)
	}
	agent := c.ipam() // n1's agent: none of these workloads is on it
	agent.SetInUse("n1", func(*Handle) bool { return false })
	if _, err := agent.GCNode(c.ctx, "n1", 0); err != nil {
		t.Fatal(err)
	}
	st, err = readState(c.ctx, etcd)
	if err != nil {
		t.Fatal(err)
	}
	nb = st.blocks[cidr]
	for ip, hid := range legacy {
		_, ok := nb.Lookup(ip)
		if want := hid != "old03" && hid != "old11"; ok != want {
			t.Errorf("%s of %s: allocated %t after release and gc, want %t", ip, hid, ok, want)
		}
	}
	if p := structuralProblems(c); len(p) > 0 {
		t.Fatalf("problems after the upgrade: %+v", p)
	}
}
