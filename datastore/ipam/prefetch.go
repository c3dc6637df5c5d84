package ipam

import (
	"context"
	"net/netip"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// prefetch reads what planning the ops needs and the caches lack: the
// configuration snapshot, unknown nodes, the handles to release and their
// blocks, and (once per batch, fresh) the blocks of requested addresses.
// The common allocation needs none of it.
func (i *IPAM) prefetch(ctx context.Context, ops []*op, bs *batchState) error {
	var nodes []string
	seenNode := map[string]bool{}
	for _, o := range ops {
		if o.kind == opAllocate && !seenNode[o.req.Node] {
			seenNode[o.req.Node] = true
			if i.snap == nil {
				nodes = append(nodes, o.req.Node)
			} else if _, ok := i.snap.nodes[o.req.Node]; !ok {
				nodes = append(nodes, o.req.Node)
			}
		}
	}
	var rs readSet
	var sr *snapshotReader
	if i.snap == nil || len(nodes) > 0 {
		sr = &snapshotReader{full: i.snap == nil, nodes: nodes}
		sr.addTo(&rs)
	}
	for _, o := range ops {
		if o.kind == opRelease && i.handles[o.handle] == nil && !bs.absentHandles[o.handle] {
			id := o.handle
			rs.add(clientv3.OpGet(HandleKey(id)), func(kvs []*mvccpb.KeyValue) { i.absorbHandle(id, kvs, bs) })
		}
	}
	if !rs.empty() {
		rev, err := rs.run(ctx, i.etcd)
		if err != nil {
			return err
		}
		if sr != nil {
			i.snap = sr.build(rev, i.snap, i.log)
			bs.freshSnap = bs.freshSnap || sr.full
		}
	}

	// Second round: blocks, now that the handles and pools are known.
	rs = readSet{}
	want := map[netip.Prefix]bool{}
	addBlock := func(cidr netip.Prefix) {
		if want[cidr] {
			return
		}
		want[cidr] = true
		rs.add(clientv3.OpGet(BlockKey(cidr)), func(kvs []*mvccpb.KeyValue) { i.absorbBlock(cidr, kvs, bs) })
	}
	for _, o := range ops {
		switch {
		case o.kind == opRelease && i.handles[o.handle] != nil:
			for _, a := range i.handles[o.handle].h.Addresses {
				if i.blocks[a.Block] == nil && !bs.absentBlocks[a.Block] {
					addBlock(a.Block)
				}
			}
		case o.kind == opAllocate:
			if id := o.req.Handle; len(o.req.IPs) > 0 && !bs.freshHandles[id] {
				// A compact block does not say who holds an address: the
				// handle's own record tells a repeated request.
				bs.freshHandles[id] = true
				rs.add(clientv3.OpGet(HandleKey(id)), func(kvs []*mvccpb.KeyValue) { i.absorbHandle(id, kvs, bs) })
			}
			for _, ip := range o.req.IPs {
				// Read requested blocks fresh: "in use" must not come
				// from a stale cache.
				if pool := i.snap.poolOf(ip); pool != nil {
					if cidr := blockOf(ip, pool.blockBits); !bs.freshBlocks[cidr] {
						addBlock(cidr)
					}
				}
			}
		}
	}
	if rs.empty() {
		return nil
	}
	_, err := rs.run(ctx, i.etcd)
	return err
}
