package ipam

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// findCapacity makes room for one more address of fam on node when the
// blocks the plan knows are full: it loads the node's blocks this IPAM has
// not seen, else claims a free block of a pool that selects the node (up to
// maxBlocksPerHost), else (unless strictAffinity) finds blocks of other
// nodes with a free address and switches the plan to borrowing.
func (i *IPAM) findCapacity(ctx context.Context, p *plan, node string, fam Family) error {
	pools := p.snap.poolsFor(node, fam)
	if len(pools) == 0 {
		return fmt.Errorf("no enabled %s pool selects node %q: %w", fam, node, ErrNoPoolForNode)
	}
	var rs readSet
	var blockKVs, affKVs []*mvccpb.KeyValue
	rs.add(clientv3.OpGet(BlocksPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()), func(kvs []*mvccpb.KeyValue) { blockKVs = kvs })
	rs.add(clientv3.OpGet(nodeAffinityPrefix(node), clientv3.WithPrefix(), clientv3.WithKeysOnly()), func(kvs []*mvccpb.KeyValue) { affKVs = kvs })
	rev, err := rs.run(ctx, i.etcd)
	if err != nil {
		return err
	}
	existing := map[netip.Prefix]bool{}
	revs := map[netip.Prefix]int64{}
	for _, kv := range blockKVs {
		if cidr, err := parseBlockKey(string(kv.Key)); err == nil {
			existing[cidr] = true
			revs[cidr] = kv.ModRevision
		}
	}
	var mine []netip.Prefix
	for _, kv := range affKVs {
		if _, cidr, err := parseAffinityKey(string(kv.Key)); err == nil {
			mine = append(mine, cidr)
		}
	}

	// The node's blocks this IPAM has not seen (its first allocation, or
	// blocks claimed by another process for the node) or has seen at an
	// older revision (addresses released elsewhere).
	var rsb readSet
	var unknown []netip.Prefix
	for _, cidr := range mine {
		if _, inPlan := p.blocks[cidr]; inPlan || !existing[cidr] {
			continue
		}
		if c := i.blocks[cidr]; c == nil || c.rev != revs[cidr] {
			unknown = append(unknown, cidr)
			rsb.add(clientv3.OpGet(BlockKey(cidr)), func(kvs []*mvccpb.KeyValue) { i.absorbBlock(cidr, kvs, nil) })
		}
	}
	if !rsb.empty() {
		if _, err := rsb.run(ctx, i.etcd); err != nil {
			return err
		}
		for _, cidr := range unknown {
			if b := i.view(p, cidr); b != nil && b.Affinity == node && b.Free() > 0 {
				if _, ok := p.snap.eligible(cidr, node, fam); ok {
					return nil
				}
			}
		}
	}

	count := len(mine) + p.newBlocksFor(node)
	atLimit := count >= p.snap.maxBlocks
	if !atLimit {
		for _, pool := range pools {
			if cidr, ok := freeBlock(pool, existing, p, node); ok {
				p.claim(cidr, pool, node, rev)
				i.log.Debug("claiming IPAM block", "node", node, "block", cidr, "pool", pool.name)
				return nil
			}
		}
	}
	if p.snap.strict {
		if atLimit {
			return fmt.Errorf("node %q holds %d blocks and may not claim another: %w", node, count, ErrMaxBlocks)
		}
		return fmt.Errorf("every block of %s pools %s is claimed and strictAffinity forbids borrowing: %w", fam, poolNames(pools), ErrPoolExhausted)
	}
	found, err := i.scanForBorrow(ctx, p, node, fam)
	if err != nil {
		return err
	}
	if found {
		p.borrowing[borrowKey{node, fam}] = true
		return nil
	}
	if atLimit {
		return fmt.Errorf("node %q holds %d blocks (maxBlocksPerHost) and no other block of %s pools %s has a free address: %w; %w",
			node, count, fam, poolNames(pools), ErrMaxBlocks, ErrPoolExhausted)
	}
	return fmt.Errorf("%s pools %s have no free block and no free address for node %q: %w", fam, poolNames(pools), node, ErrPoolExhausted)
}

// scanForBorrow reads every block and caches those of the node's pools
// that have a free address; it reports whether another node's block does.
func (i *IPAM) scanForBorrow(ctx context.Context, p *plan, node string, fam Family) (bool, error) {
	var rs readSet
	rs.add(clientv3.OpGet(BlocksPrefix, clientv3.WithPrefix()), func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			cidr, err := parseBlockKey(string(kv.Key))
			if err != nil || familyOf(cidr.Addr()) != fam {
				continue
			}
			if _, ok := p.snap.eligible(cidr, node, fam); !ok {
				continue
			}
			if _, inPlan := p.blocks[cidr]; inPlan {
				continue // the plan's copy stays; a stale one fails the guard
			}
			if c := i.blocks[cidr]; c != nil && c.rev == kv.ModRevision {
				continue
			}
			i.absorbBlock(cidr, []*mvccpb.KeyValue{kv}, nil)
			if c := i.blocks[cidr]; c != nil && c.b.Free() == 0 && c.b.Affinity != node {
				delete(i.blocks, cidr) // nothing to borrow; keep the cache small
			}
		}
	})
	if _, err := rs.run(ctx, i.etcd); err != nil {
		return false, err
	}
	return len(i.candidates(p, node, fam, false)) > 0, nil
}

// freeBlock picks a block of the pool that nobody holds. The search starts
// at a position derived from the node's name so that nodes claiming at the
// same moment rarely pick the same block.
func freeBlock(pool *poolInfo, existing map[netip.Prefix]bool, p *plan, node string) (netip.Prefix, bool) {
	var odd []netip.Prefix // blocks of another size (the pool's blockSize changed)
	for cidr := range existing {
		if cidr.Bits() != pool.blockBits && pool.cidr.Overlaps(cidr) {
			odd = append(odd, cidr)
		}
	}
	n := blockCount(pool.cidr, pool.blockBits)
	h := fnv.New32a()
	h.Write([]byte(node))
	start := uint64(h.Sum32()) % n
	for k := uint64(0); k < n; k++ {
		cidr := nthBlock(pool.cidr, pool.blockBits, (start+k)%n)
		if existing[cidr] || p.blocks[cidr] != nil || overlapsAny(cidr, odd) {
			continue
		}
		return cidr, true
	}
	return netip.Prefix{}, false
}

func overlapsAny(c netip.Prefix, others []netip.Prefix) bool {
	for _, o := range others {
		if c.Overlaps(o) {
			return true
		}
	}
	return false
}

func poolNames(pools []*poolInfo) string {
	names := make([]string, len(pools))
	for k, p := range pools {
		names[k] = p.name
	}
	return "[" + strings.Join(names, ", ") + "]"
}

// claimForAddress claims the (absent) block that holds a requested address
// for node, within maxBlocksPerHost.
func (i *IPAM) claimForAddress(ctx context.Context, p *plan, node string, cidr netip.Prefix, pool *poolInfo) error {
	var affKVs []*mvccpb.KeyValue
	var rs readSet
	rs.add(clientv3.OpGet(nodeAffinityPrefix(node), clientv3.WithPrefix(), clientv3.WithKeysOnly()), func(kvs []*mvccpb.KeyValue) { affKVs = kvs })
	rev, err := rs.run(ctx, i.etcd)
	if err != nil {
		return err
	}
	if count := len(affKVs) + p.newBlocksFor(node); count >= p.snap.maxBlocks {
		return fmt.Errorf("address block %s is unclaimed but node %q holds %d blocks already: %w", cidr, node, count, ErrMaxBlocks)
	}
	p.claim(cidr, pool, node, rev)
	return nil
}

// planSpecific takes exactly the requested addresses.
func (i *IPAM) planSpecific(ctx context.Context, p *plan, req *Request, bs *batchState) ([]HandleAddress, error) {
	var addrs []HandleAddress
	for _, ip := range req.IPs {
		pool := p.snap.poolOf(ip)
		if pool == nil {
			return addrs, fmt.Errorf("%s: %w", ip, ErrOutsidePools)
		}
		cidr := blockOf(ip, pool.blockBits)
		wb := i.work(p, cidr)
		if wb == nil {
			if !bs.absentBlocks[cidr] {
				return addrs, fmt.Errorf("block %s of %s could not be read", cidr, ip)
			}
			if err := i.claimForAddress(ctx, p, req.Node, cidr, pool); err != nil {
				return addrs, fmt.Errorf("%s: %w", ip, err)
			}
			wb = p.blocks[cidr]
		}
		if a, taken := wb.b.Lookup(ip); taken {
			if a.Handle == req.Handle || a.Handle == "" && i.handleLists(req.Handle, ip) {
				// Ours already (a repeated request): the handle guard
				// fails if the handle exists and returns it; else this
				// writes the missing handle record.
				addrs = append(addrs, HandleAddress{IP: ip, Block: cidr})
				continue
			}
			holder := fmt.Sprintf("handle %q", a.Handle)
			if a.Handle == "" {
				holder = "another handle" // the compact layout names none; calyxctl ipam show --ip does
			}
			return addrs, fmt.Errorf("%s is held by %s on node %q: %w", ip, holder, a.Node, ErrAddressInUse)
		}
		if wb.b.Affinity != req.Node && p.snap.strict {
			return addrs, fmt.Errorf("%s lies in block %s of node %q: %w", ip, cidr, wb.b.Affinity, ErrBorrowForbidden)
		}
		i.takeIP(p, wb, ip, req)
		addrs = append(addrs, HandleAddress{IP: ip, Block: cidr})
	}
	return addrs, nil
}

// handleLists reports whether the cached record of handle (read fresh in
// this batch by prefetch) lists ip.
func (i *IPAM) handleLists(handle string, ip netip.Addr) bool {
	c := i.handles[handle]
	return c != nil && slices.ContainsFunc(c.h.Addresses, func(a HandleAddress) bool { return a.IP == ip })
}
