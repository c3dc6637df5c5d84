package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
)

// clusterState is every IPAM record and what it refers to, read at one
// revision: what check, gc and show work from.
type clusterState struct {
	rev        int64
	blocks     map[netip.Prefix]*Block
	blockRevs  map[netip.Prefix]int64
	handles    map[string]*Handle
	handleRevs map[string]int64
	// affinities maps node -> block -> mod revision of the affinity key.
	affinities map[string]map[netip.Prefix]int64
	pools      []*poolInfo
	nodes      map[string]bool
	endpoints  map[string]*datastore.WorkloadEndpoint
	// unreadable lists keys whose value does not decode.
	unreadable []Problem
}

// readState reads the whole IPAM state in one transaction.
func readState(ctx context.Context, etcd *clientv3.Client) (*clusterState, error) {
	st := &clusterState{
		blocks: map[netip.Prefix]*Block{}, blockRevs: map[netip.Prefix]int64{},
		handles: map[string]*Handle{}, handleRevs: map[string]int64{},
		affinities: map[string]map[netip.Prefix]int64{},
		nodes:      map[string]bool{}, endpoints: map[string]*datastore.WorkloadEndpoint{},
	}
	bad := func(key string, err error) {
		st.unreadable = append(st.unreadable, Problem{Kind: ProblemUnreadable, Subject: key, Detail: err.Error()})
	}
	var rs readSet
	rs.add(clientv3.OpGet(BlocksPrefix, clientv3.WithPrefix()), func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			cidr, err := parseBlockKey(string(kv.Key))
			if err != nil {
				bad(string(kv.Key), err)
				continue
			}
			b, err := DecodeBlock(kv.Value)
			if err == nil && b.Prefix != cidr {
				err = fmt.Errorf("the block record says %s", b.Prefix)
			}
			if err != nil {
				bad(string(kv.Key), err)
				continue
			}
			st.blocks[cidr], st.blockRevs[cidr] = b, kv.ModRevision
		}
	})
	rs.add(clientv3.OpGet(HandlesPrefix, clientv3.WithPrefix()), func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			id := strings.TrimPrefix(string(kv.Key), HandlesPrefix)
			h, err := decodeHandle(kv.Value)
			if err == nil && h.ID != id {
				err = fmt.Errorf("the handle record says %q", h.ID)
			}
			if err != nil {
				bad(string(kv.Key), err)
				continue
			}
			st.handles[id], st.handleRevs[id] = h, kv.ModRevision
		}
	})
	rs.add(clientv3.OpGet(AffinityPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()), func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			node, cidr, err := parseAffinityKey(string(kv.Key))
			if err != nil {
				bad(string(kv.Key), err)
				continue
			}
			if st.affinities[node] == nil {
				st.affinities[node] = map[netip.Prefix]int64{}
			}
			st.affinities[node][cidr] = kv.ModRevision
		}
	})
	rs.add(clientv3.OpGet(poolsPrefix, clientv3.WithPrefix()), func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			if p, err := decodePool(kv); err == nil {
				st.pools = append(st.pools, p)
			}
		}
	})
	rs.add(clientv3.OpGet(datastore.KindPrefix(datastore.KindNode), clientv3.WithPrefix(), clientv3.WithKeysOnly()), func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			if _, name, ok := datastore.ParseKey(string(kv.Key)); ok {
				st.nodes[name] = true
			}
		}
	})
	rs.add(clientv3.OpGet(datastore.KindPrefix(datastore.KindWorkloadEndpoint), clientv3.WithPrefix()), func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			r, err := datastore.Decode(datastore.KindWorkloadEndpoint, kv.Value)
			if err != nil {
				bad(string(kv.Key), err)
				continue
			}
			w := r.(*datastore.WorkloadEndpoint)
			st.endpoints[w.Metadata.Name] = w
		}
	})
	rev, err := rs.run(ctx, etcd)
	if err != nil {
		return nil, err
	}
	st.rev = rev
	st.fillFromHandles()
	return st, nil
}

// poolOf is the pool holding ip.
func (st *clusterState) poolOf(ip netip.Addr) *poolInfo {
	for _, p := range st.pools {
		if p.cidr.Contains(ip) {
			return p
		}
	}
	return nil
}

// blockHolding finds the block that holds ip, whatever its size.
func (st *clusterState) blockHolding(ip netip.Addr) *Block {
	if p := st.poolOf(ip); p != nil {
		if b := st.blocks[blockOf(ip, p.blockBits)]; b != nil {
			return b
		}
	}
	for cidr, b := range st.blocks {
		if cidr.Contains(ip) {
			return b
		}
	}
	return nil
}
