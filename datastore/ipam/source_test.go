package ipam

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

// TestBlockSourceFeedsTheSyncer follows blocks through the real syncer, the
// way the agent does: its own block to announce, and the /32 it borrowed.
func TestBlockSourceFeedsTheSyncer(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/26", 26, "") // one block only
	c.node("n1", nil)
	c.node("n2", nil)

	var mu sync.Mutex
	blocks := map[string]*Block{}
	inSync := false
	s := datastore.NewSyncer(c.ds.Etcd(), []datastore.Source{datastore.ResourceSource(), BlockSource()}, testLog())
	ctx, cancel := context.WithCancel(c.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, func(evs []datastore.Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range evs {
				switch ev.Type {
				case datastore.EventInSync:
					inSync = true
				case datastore.EventDelete:
					delete(blocks, ev.Key)
				default:
					if b, ok := ev.Value.(*Block); ok {
						blocks[ev.Key] = b
					}
				}
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })

	mine, err := c.ipam().Allocate(c.ctx, Request{Handle: "a", Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	borrowed, err := c.ipam().Allocate(c.ctx, Request{Handle: "b", Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	cidr := netip.MustParsePrefix("10.244.0.0/26")
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		b := blocks[BlockKey(cidr)]
		ok := inSync && b != nil && b.Used() == 2
		mu.Unlock()
		if ok {
			if b.CIDR() != cidr || b.Affinity != "n1" {
				t.Fatalf("block %s with affinity %q, want %s of n1", b.CIDR(), b.Affinity, cidr)
			}
			if got := b.BorrowedBy("n2"); !slices.Equal(got, []netip.Addr{borrowed[0].Addr()}) {
				t.Fatalf("BorrowedBy(n2) = %v, want %v", got, borrowed[0].Addr())
			}
			if got := b.BorrowedBy("n1"); len(got) != 0 {
				t.Fatalf("BorrowedBy(n1) = %v; n1's own address %v is not borrowed", got, mine)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the syncer did not deliver the block with both allocations")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The agent's source hands other nodes' blocks over without their
// allocations, except what the agent's node holds in them.
func TestNodeBlockSourceTrimsOthersBlocks(t *testing.T) {
	b := mustBlock(t, "10.0.0.0/26") // affinity n1
	for k, node := range []string{"n1", "n2", "n1"} {
		b.take(Allocation{IP: addrAt(b.Prefix, k), Node: node, Borrowed: node != "n1"})
	}
	val, err := b.encode()
	if err != nil {
		t.Fatal(err)
	}
	for node, kept := range map[string]int{"n1": 3, "n2": 1, "n3": 0} {
		v, err := NodeBlockSource(node).Decode(BlockKey(b.Prefix), val)
		if err != nil {
			t.Fatal(err)
		}
		got := v.(*Block)
		if len(got.Allocations) != kept || got.Used() != 3 || got.Affinity != "n1" {
			t.Errorf("NodeBlockSource(%s): %d allocations kept (want %d), Used %d (want 3)", node, len(got.Allocations), kept, got.Used())
		}
	}
}
