package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// affinityRecord is the value of an affinity key.
type affinityRecord struct {
	Node string       `json:"node"`
	CIDR netip.Prefix `json:"cidr"`
	Pool string       `json:"pool,omitempty"`
}

// commit writes the plan in one transaction guarded by every revision it
// was built on. It reports whether the transaction succeeded; when it did
// not, the else branch has refreshed the caches (and snapshot) with the
// current values of everything the plan depended on.
func (i *IPAM) commit(ctx context.Context, p *plan, bs *batchState) (bool, error) {
	var cmps []clientv3.Cmp
	var puts []clientv3.Op
	var elses readSet

	var cidrs []netip.Prefix // the blocks written
	for _, cidr := range sortedPrefixes(p.blocks) {
		wb := p.blocks[cidr]
		if !wb.dirty && !wb.guard {
			continue
		}
		key := BlockKey(cidr)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", wb.rev))
		elses.add(clientv3.OpGet(key), func(kvs []*mvccpb.KeyValue) { i.absorbBlock(cidr, kvs, bs) })
		if !wb.dirty {
			continue
		}
		val, err := wb.b.encode()
		if err != nil {
			return false, fmt.Errorf("encoding block %s: %w", cidr, err)
		}
		puts = append(puts, clientv3.OpPut(key, string(val)))
		cidrs = append(cidrs, cidr)
	}
	for _, cidr := range sortedPrefixes(p.absentBlocks) {
		key := BlockKey(cidr)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		elses.add(clientv3.OpGet(key), func(kvs []*mvccpb.KeyValue) { i.absorbBlock(cidr, kvs, bs) })
	}
	for _, id := range sortedKeys(p.handlePuts) {
		val, err := json.Marshal(p.handlePuts[id])
		if err != nil {
			return false, fmt.Errorf("encoding handle %q: %w", id, err)
		}
		key := HandleKey(id)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		puts = append(puts, clientv3.OpPut(key, string(val)))
		elses.add(clientv3.OpGet(key), func(kvs []*mvccpb.KeyValue) { i.absorbHandle(id, kvs, bs) })
	}
	for _, id := range sortedKeys(p.handleDels) {
		key := HandleKey(id)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", p.handleDels[id]))
		puts = append(puts, clientv3.OpDelete(key))
		elses.add(clientv3.OpGet(key), func(kvs []*mvccpb.KeyValue) { i.absorbHandle(id, kvs, bs) })
	}
	for _, a := range p.affinities {
		val, _ := json.Marshal(affinityRecord{Node: a.node, CIDR: a.cidr, Pool: a.pool})
		puts = append(puts, clientv3.OpPut(AffinityKey(a.node, a.cidr), string(val)))
	}
	for _, node := range sortedKeys(p.affGuards) {
		// No affinity of the node appeared since they were counted, so
		// maxBlocksPerHost holds even when two claims race.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nodeAffinityPrefix(node)), "<", p.affGuards[node]+1).WithPrefix())
	}
	var sr *snapshotReader
	if len(p.allocNodes) > 0 || len(p.affinities) > 0 {
		nodes := sortedKeys(p.allocNodes)
		for _, a := range p.affinities {
			if !p.allocNodes[a.node] {
				nodes = append(nodes, a.node)
			}
		}
		cmps = append(cmps, p.snap.guards(p.usedPools, nodes)...)
		sr = &snapshotReader{full: true, nodes: nodes}
		sr.addTo(&elses)
	}

	resp, err := i.etcd.Txn(ctx).If(cmps...).Then(puts...).Else(elses.ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("IPAM transaction in etcd: %w", err)
	}
	if !resp.Succeeded {
		i.conflicts.Add(1)
		elses.apply(resp.Responses)
		if sr != nil {
			i.snap = sr.build(resp.Header.Revision, i.snap, i.log)
			bs.freshSnap = true
		}
		i.log.Debug("IPAM transaction lost a race; retrying", "blocks", len(cidrs), "handles", len(p.handlePuts)+len(p.handleDels))
		return false, nil
	}
	rev := resp.Header.Revision
	for _, cidr := range cidrs {
		i.blocks[cidr] = &cachedBlock{b: p.blocks[cidr].b, rev: rev}
	}
	for id, h := range p.handlePuts {
		i.handles[id] = &cachedHandle{h: h, rev: rev}
	}
	for id := range p.handleDels {
		delete(i.handles, id)
	}
	for _, a := range p.affinities {
		i.log.Info("claimed IPAM block", "node", a.node, "block", a.cidr, "pool", a.pool)
	}
	return true, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
