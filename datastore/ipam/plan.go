package ipam

import (
	"net/netip"
	"slices"
	"time"
)

// plan is the next transaction of a batch, built in memory on copies of the
// cached blocks: which blocks change (guarded by the revision they were read
// at, 0 for a new block), which handles are written or deleted, which
// affinities are claimed.
type plan struct {
	snap *snapshot
	now  time.Time

	blocks       map[netip.Prefix]*workBlock
	handlePuts   map[string]*Handle
	handleDels   map[string]int64      // handle -> mod revision read
	absentBlocks map[netip.Prefix]bool // blocks the plan relies on not existing
	affinities   []affinityClaim
	affGuards    map[string]int64 // node -> revision its affinities were listed at
	usedPools    map[string]*poolInfo
	allocNodes   map[string]bool
	taken        map[string][]HandleAddress // handle -> addresses this plan took for it
	borrowing    map[borrowKey]bool         // findCapacity decided node borrows for fam
	capacityHit  map[borrowKey]int          // findCapacity calls, to bound them
	capacityErr  map[borrowKey]error
}

type workBlock struct {
	b     *Block
	rev   int64
	dirty bool // written by the transaction
	// guard: the transaction depends on the block even if it does not
	// change it (a release that found nothing to free must not trust a
	// stale copy).
	guard bool
}

type affinityClaim struct {
	node string
	cidr netip.Prefix
	pool string
}

type borrowKey struct {
	node string
	fam  Family
}

func (i *IPAM) newPlan() *plan {
	return &plan{
		snap:         i.snap,
		now:          i.now().UTC(),
		blocks:       map[netip.Prefix]*workBlock{},
		handlePuts:   map[string]*Handle{},
		handleDels:   map[string]int64{},
		absentBlocks: map[netip.Prefix]bool{},
		affGuards:    map[string]int64{},
		usedPools:    map[string]*poolInfo{},
		allocNodes:   map[string]bool{},
		taken:        map[string][]HandleAddress{},
		borrowing:    map[borrowKey]bool{},
		capacityHit:  map[borrowKey]int{},
		capacityErr:  map[borrowKey]error{},
	}
}

// view is the block as the plan sees it (its working copy or the cache).
func (i *IPAM) view(p *plan, cidr netip.Prefix) *Block {
	if wb, ok := p.blocks[cidr]; ok {
		return wb.b
	}
	if c, ok := i.blocks[cidr]; ok {
		return c.b
	}
	return nil
}

// work is the plan's writable copy of a cached block.
func (i *IPAM) work(p *plan, cidr netip.Prefix) *workBlock {
	if wb, ok := p.blocks[cidr]; ok {
		return wb
	}
	c, ok := i.blocks[cidr]
	if !ok {
		return nil
	}
	wb := &workBlock{b: c.b.clone(), rev: c.rev}
	p.blocks[cidr] = wb
	return wb
}

// claim adds a new block for node to the plan; listRev is the revision the
// node's affinities were counted at.
func (p *plan) claim(cidr netip.Prefix, pool *poolInfo, node string, listRev int64) {
	p.blocks[cidr] = &workBlock{b: newBlock(cidr, pool.name, node, p.now), rev: 0, dirty: true}
	p.affinities = append(p.affinities, affinityClaim{node: node, cidr: cidr, pool: pool.name})
	if r, ok := p.affGuards[node]; !ok || listRev < r {
		p.affGuards[node] = listRev
	}
	p.usedPools[pool.name] = pool
}

// newBlocksFor counts the blocks this plan claims for node.
func (p *plan) newBlocksFor(node string) int {
	n := 0
	for _, a := range p.affinities {
		if a.node == node {
			n++
		}
	}
	return n
}

// candidates lists the blocks the plan could take an address of fam from
// for node: its own (affine) or, when borrowing, everybody else's; lowest
// CIDR first so that blocks fill up one after the other.
func (i *IPAM) candidates(p *plan, node string, fam Family, affine bool) []netip.Prefix {
	var out []netip.Prefix
	consider := func(cidr netip.Prefix, b *Block) {
		if (b.Affinity == node) != affine || b.Free() == 0 || familyOf(cidr.Addr()) != fam {
			return
		}
		if _, ok := p.snap.eligible(cidr, node, fam); ok {
			out = append(out, cidr)
		}
	}
	for cidr, wb := range p.blocks {
		consider(cidr, wb.b)
	}
	for cidr, c := range i.blocks {
		if _, inPlan := p.blocks[cidr]; !inPlan {
			consider(cidr, c.b)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// takeFrom allocates the next free address of the block to the request.
func (i *IPAM) takeFrom(p *plan, cidr netip.Prefix, req *Request) (HandleAddress, bool) {
	wb := i.work(p, cidr)
	if wb == nil {
		return HandleAddress{}, false
	}
	ord, ok := wb.b.nextFree()
	if !ok {
		return HandleAddress{}, false
	}
	ip := addrAt(cidr, ord)
	i.takeIP(p, wb, ip, req)
	return HandleAddress{IP: ip, Block: cidr}, true
}

func (i *IPAM) takeIP(p *plan, wb *workBlock, ip netip.Addr, req *Request) {
	wb.b.take(Allocation{
		IP: ip, Handle: req.Handle, Node: req.Node, Attributes: req.Attrs,
		Borrowed: wb.b.Affinity != req.Node, Time: p.now,
	})
	wb.b.Updated = p.now
	wb.dirty = true
	p.taken[req.Handle] = append(p.taken[req.Handle], HandleAddress{IP: ip, Block: wb.b.Prefix})
	if pool := p.snap.poolOf(ip); pool != nil {
		p.usedPools[pool.name] = pool
	}
	p.allocNodes[req.Node] = true
}

// undo gives back the addresses the plan took for a request that failed
// half way (not those the handle held before).
func (p *plan) undo(handle string) {
	for _, a := range p.taken[handle] {
		if wb, ok := p.blocks[a.Block]; ok {
			wb.b.release(a.IP, handle)
		}
	}
	delete(p.taken, handle)
}

// releaseHandle frees the handle's addresses in the plan and deletes it.
func (i *IPAM) releaseHandle(p *plan, h *Handle, rev int64) {
	for _, a := range h.Addresses {
		wb := i.work(p, a.Block)
		if wb == nil {
			p.absentBlocks[a.Block] = true
			continue
		}
		wb.guard = true
		if wb.b.release(a.IP, h.ID) {
			wb.b.Updated = p.now
			wb.dirty = true
		}
	}
	p.handleDels[h.ID] = rev
}
