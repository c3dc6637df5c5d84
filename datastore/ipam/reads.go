package ipam

import (
	"context"
	"fmt"
	"net/netip"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// readSet gathers reads to run in one transaction (one round trip, one
// revision), each with what to do with its answer.
type readSet struct {
	ops      []clientv3.Op
	handlers []func([]*mvccpb.KeyValue)
}

func (r *readSet) add(o clientv3.Op, handle func([]*mvccpb.KeyValue)) {
	r.ops = append(r.ops, o)
	r.handlers = append(r.handlers, handle)
}

func (r *readSet) empty() bool { return len(r.ops) == 0 }

// run reads everything at one revision and hands each answer on.
func (r *readSet) run(ctx context.Context, etcd *clientv3.Client) (int64, error) {
	resp, err := etcd.Txn(ctx).Then(r.ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("reading IPAM state from etcd: %w", err)
	}
	r.apply(resp.Responses)
	return resp.Header.Revision, nil
}

// apply hands answers (of a read transaction or of a failed write's else
// branch) to the handlers.
func (r *readSet) apply(resps []*etcdserverpb.ResponseOp) {
	for k, h := range r.handlers {
		if k < len(resps) {
			h(resps[k].GetResponseRange().GetKvs())
		}
	}
}

// absorbBlock puts what etcd holds for the block into the cache.
func (i *IPAM) absorbBlock(cidr netip.Prefix, kvs []*mvccpb.KeyValue, bs *batchState) {
	if bs != nil {
		bs.freshBlocks[cidr] = true
	}
	if len(kvs) == 0 {
		delete(i.blocks, cidr)
		if bs != nil {
			bs.absentBlocks[cidr] = true
		}
		return
	}
	if bs != nil {
		delete(bs.absentBlocks, cidr)
	}
	b, err := DecodeBlock(kvs[0].Value)
	if err != nil {
		i.log.Error("IPAM block unreadable; not allocating from it", "block", cidr, "err", err)
		delete(i.blocks, cidr)
		return
	}
	i.blocks[cidr] = &cachedBlock{b: b, rev: kvs[0].ModRevision}
}

// absorbHandle puts what etcd holds for the handle into the cache.
func (i *IPAM) absorbHandle(id string, kvs []*mvccpb.KeyValue, bs *batchState) {
	if len(kvs) == 0 {
		delete(i.handles, id)
		bs.absentHandles[id] = true
		return
	}
	delete(bs.absentHandles, id)
	h, err := decodeHandle(kvs[0].Value)
	if err != nil {
		// Keep the key's revision so a release can still delete it.
		i.log.Error("IPAM handle unreadable; releasing it frees no address", "handle", id, "err", err)
		h = &Handle{ID: id}
	}
	i.handles[id] = &cachedHandle{h: h, rev: kvs[0].ModRevision}
}
