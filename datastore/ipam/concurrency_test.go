package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// ledger collects what concurrent callers were given.
type ledger struct {
	mu    sync.Mutex
	addrs map[netip.Addr]string // address -> handle
	byH   map[string][]netip.Prefix
	dups  []string
}

func newLedger() *ledger {
	return &ledger{addrs: map[netip.Addr]string{}, byH: map[string][]netip.Prefix{}}
}

func (l *ledger) record(handle string, got []netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byH[handle] = got
	for _, p := range got {
		if prev, ok := l.addrs[p.Addr()]; ok && prev != handle {
			l.dups = append(l.dups, fmt.Sprintf("%s given to %s and %s", p.Addr(), prev, handle))
		}
		l.addrs[p.Addr()] = handle
	}
}

// structuralProblems are Check's findings about the IPAM records themselves
// (blocks, handles, affinities), leaving out those about endpoints.
func structuralProblems(c *cluster) []Problem {
	c.t.Helper()
	st, err := readState(c.ctx, c.ds.Etcd())
	if err != nil {
		c.t.Fatal(err)
	}
	var out []Problem
	for _, p := range st.check(st.now()) {
		switch p.Kind {
		case ProblemLeakedAllocation, ProblemUnownedAllocation, ProblemEndpointWithoutAllocation:
		default:
			out = append(out, p)
		}
	}
	// Borrow marks must agree with the block's affinity.
	for _, b := range st.blocks {
		for _, a := range b.Allocations {
			if a.Borrowed != (a.Node != b.Affinity) {
				out = append(out, Problem{Kind: "borrow-mark", Subject: a.IP.String(), Detail: fmt.Sprintf("node %q, block affinity %q, borrowed %t", a.Node, b.Affinity, a.Borrowed)})
			}
		}
	}
	return out
}

// assertMatchesLedger checks etcd holds exactly what the callers were given.
func assertMatchesLedger(t *testing.T, c *cluster, l *ledger) (borrowed int) {
	t.Helper()
	if len(l.dups) > 0 {
		t.Fatalf("addresses handed out twice: %v", l.dups)
	}
	blocks, handles := c.state()
	inBlocks := 0
	for _, b := range blocks {
		inBlocks += b.Used()
		for _, a := range b.Allocations {
			if l.addrs[a.IP] != a.Handle {
				t.Fatalf("block %s gives %s to %q, the caller got it as %q", b.Prefix, a.IP, a.Handle, l.addrs[a.IP])
			}
			if a.Borrowed {
				borrowed++
			}
		}
	}
	if inBlocks != len(l.addrs) || len(handles) != len(l.byH) {
		t.Fatalf("etcd holds %d allocations and %d handles; callers got %d addresses for %d handles", inBlocks, len(handles), len(l.addrs), len(l.byH))
	}
	if p := structuralProblems(c); len(p) > 0 {
		t.Fatalf("inconsistent IPAM records: %+v", p)
	}
	return borrowed
}

// releaseAll releases every handle from the node's IPAM, twice (the second
// must be a no-op), and checks nothing is left, not even a block.
func releaseAll(t *testing.T, c *cluster, ims []*IPAM, nodes []string, l *ledger) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(l.byH)*2)
	handles := make(chan string, len(l.byH))
	for h := range l.byH {
		handles <- h
	}
	close(handles)
	for k := 0; k < 24; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			im := ims[k%len(ims)]
			for h := range handles {
				if err := im.Release(c.ctx, h); err != nil {
					errs <- err
				}
				if err := im.Release(c.ctx, h); err != nil {
					errs <- fmt.Errorf("second release of %s: %w", h, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k, node := range nodes {
		if _, err := ims[k].ReleaseEmptyAffinities(c.ctx, node, 0); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.ds.Etcd().Get(c.ctx, BlocksPrefix[:len(BlocksPrefix)-len("blocks/")], withPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		t.Errorf("left in etcd after releasing everything: %s = %.400s", kv.Key, kv.Value)
	}
}

// burst runs goroutinesPerNode callers on each node; together they make
// total allocations, or each stops when the pool is exhausted.
func burst(t *testing.T, c *cluster, ims []*IPAM, nodes []string, goroutinesPerNode, total int, l *ledger) (exhausted int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	for n, node := range nodes {
		for g := 0; g < goroutinesPerNode; g++ {
			wg.Add(1)
			callers := len(nodes) * goroutinesPerNode
			perCaller := total / callers
			if n*goroutinesPerNode+g < total%callers {
				perCaller++
			}
			go func() {
				defer wg.Done()
				for k := 0; k < perCaller; k++ {
					h := fmt.Sprintf("%s-g%d-%d.eth0", node, g, k)
					got, err := ims[n].Allocate(c.ctx, Request{Handle: h, Node: node, Attrs: Attributes{Pod: h}})
					if errors.Is(err, ErrPoolExhausted) {
						mu.Lock()
						exhausted++
						mu.Unlock()
						return
					}
					if err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
						return
					}
					l.record(h, got)
				}
			}()
		}
	}
	wg.Wait()
	if err := errors.Join(failures...); err != nil {
		t.Fatal(err)
	}
	return exhausted
}

func threeNodes(c *cluster) ([]*IPAM, []string) {
	nodes := []string{"node-a", "node-b", "node-c"}
	ims := make([]*IPAM, len(nodes))
	for k, n := range nodes {
		c.node(n, nil)
		ims[k] = c.ipam()
	}
	return ims, nodes
}

func TestConcurrentAllocationThreeNodes(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/21", 26, "")
	ims, nodes := threeNodes(c)
	l := newLedger()

	// 3 nodes x 8 goroutines: 1,500 allocations in all.
	burst(t, c, ims, nodes, 8, 1500, l)
	if len(l.addrs) != 1500 {
		t.Fatalf("%d addresses handed out, want 1500", len(l.addrs))
	}
	pool := netip.MustParsePrefix("10.244.0.0/21")
	for a := range l.addrs {
		if !pool.Contains(a) {
			t.Fatalf("%s is outside the pool", a)
		}
	}
	if borrowed := assertMatchesLedger(t, c, l); borrowed != 0 {
		t.Errorf("%d addresses borrowed although the pool had free blocks", borrowed)
	}
	var conflicts int64
	for _, im := range ims {
		conflicts += im.conflicts.Load()
	}
	t.Logf("transactions that lost a race: %d", conflicts)
	releaseAll(t, c, ims, nodes, l)
}

func TestConcurrentAllocationBorrowsThenExhausts(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/25", 26, "") // 2 blocks, 128 addresses, 3 nodes
	ims, nodes := threeNodes(c)
	l := newLedger()

	// One allocation per node in turn: two nodes claim the two blocks, the
	// third has none left to claim and must borrow.
	for k, node := range nodes {
		h := node + "-first.eth0"
		got, err := ims[k].Allocate(c.ctx, Request{Handle: h, Node: node})
		if err != nil {
			t.Fatal(err)
		}
		l.record(h, got)
	}
	if borrowed := assertMatchesLedger(t, c, l); borrowed != 1 {
		t.Fatalf("%d addresses borrowed by the node left without a block, want 1", borrowed)
	}

	// Then all 24 callers allocate until the pool is exhausted.
	exhausted := burst(t, c, ims, nodes, 8, 24000, l)
	if len(l.addrs) != 128 {
		t.Fatalf("%d addresses handed out from a /25, want all 128", len(l.addrs))
	}
	if exhausted != 24 {
		t.Fatalf("%d callers saw ErrPoolExhausted, want all 24", exhausted)
	}
	borrowed := assertMatchesLedger(t, c, l)
	perNode := map[string]int{}
	for _, h := range l.addrs {
		perNode[h[:len("node-a")]]++
	}
	// How many the blockless node gets during the burst depends on how
	// often it wins against the blocks' owners; it is only logged.
	t.Logf("addresses per node %v, %d of them borrowed", perNode, borrowed)
	_, err := ims[0].Allocate(c.ctx, Request{Handle: "one-more", Node: nodes[0]})
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("allocation from a full pool: %v, want ErrPoolExhausted", err)
	}
	t.Logf("error as the user sees it: %v", err)
	releaseAll(t, c, ims, nodes, l)
}
