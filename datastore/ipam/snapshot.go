package ipam

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/selector"
)

// poolInfo is an IPPool reduced to what allocation needs.
type poolInfo struct {
	name      string
	cidr      netip.Prefix
	blockBits int
	disabled  bool
	sel       *selector.Selector // nil when the stored selector does not parse: selects no node
	createRev int64
}

func (p *poolInfo) family() Family { return familyOf(p.cidr.Addr()) }

func (p *poolInfo) selects(labels map[string]string) bool {
	return p.sel != nil && p.sel.Evaluate(labels)
}

// nodeInfo is what a Node resource contributes: the labels nodeSelector
// matches, and its mod revision (0: not registered) for the guard.
type nodeInfo struct {
	labels map[string]string
	rev    int64
}

// snapshot is the configuration allocation decisions depend on: pools,
// IPAMConfig and the labels of the nodes served. Every allocating
// transaction is guarded so that it fails if any of it changed since the
// snapshot was read; the failure branch then returns the new values.
type snapshot struct {
	rev       int64 // the pools were read at this revision
	pools     []*poolInfo
	strict    bool
	maxBlocks int
	configRev int64
	nodes     map[string]nodeInfo
}

var (
	poolsPrefix = datastore.KindPrefix(datastore.KindIPPool)
	configKey   = datastore.Key(datastore.KindIPAMConfig, datastore.DefaultSingletonName)
)

func nodeKey(node string) string { return datastore.Key(datastore.KindNode, node) }

// snapshotReader reads a snapshot inside a readSet: add its reads, run the
// set (or a failed write's else branch), then build.
type snapshotReader struct {
	full          bool // pools and IPAMConfig too, not only nodes
	nodes         []string
	pools, config []*mvccpb.KeyValue
	nodeKVs       [][]*mvccpb.KeyValue
}

func (r *snapshotReader) addTo(rs *readSet) {
	r.nodeKVs = make([][]*mvccpb.KeyValue, len(r.nodes))
	if r.full {
		rs.add(clientv3.OpGet(poolsPrefix, clientv3.WithPrefix()), func(kvs []*mvccpb.KeyValue) { r.pools = kvs })
		rs.add(clientv3.OpGet(configKey), func(kvs []*mvccpb.KeyValue) { r.config = kvs })
	}
	for k, n := range r.nodes {
		rs.add(clientv3.OpGet(nodeKey(n)), func(kvs []*mvccpb.KeyValue) { r.nodeKVs[k] = kvs })
	}
}

// build makes the snapshot read at rev; nodes not re-read, and with a
// partial read the pools and config, are carried over from prev.
func (r *snapshotReader) build(rev int64, prev *snapshot, log *slog.Logger) *snapshot {
	s := &snapshot{rev: rev, maxBlocks: datastore.DefaultMaxBlocksPerHost, nodes: map[string]nodeInfo{}}
	if prev != nil {
		if !r.full {
			c := *prev
			s = &c
			s.nodes = map[string]nodeInfo{}
		}
		for n, info := range prev.nodes {
			s.nodes[n] = info
		}
	}
	if r.full {
		for _, kv := range r.pools {
			if p, err := decodePool(kv); err != nil {
				log.Error("ignoring an IPPool IPAM cannot read", "key", string(kv.Key), "err", err)
			} else {
				s.pools = append(s.pools, p)
			}
		}
		slices.SortFunc(s.pools, func(a, b *poolInfo) int { return strings.Compare(a.name, b.name) })
		if len(r.config) > 0 {
			s.configRev = r.config[0].ModRevision
			if res, err := datastore.Decode(datastore.KindIPAMConfig, r.config[0].Value); err != nil {
				log.Error("ignoring an IPAMConfig IPAM cannot read; using defaults", "err", err)
			} else {
				spec := res.(*datastore.IPAMConfig).Spec
				s.strict, s.maxBlocks = spec.StrictAffinity, spec.EffectiveMaxBlocksPerHost()
			}
		}
	}
	for k, n := range r.nodes {
		info := nodeInfo{}
		if kvs := r.nodeKVs[k]; len(kvs) > 0 {
			info.rev = kvs[0].ModRevision
			if res, err := datastore.Decode(datastore.KindNode, kvs[0].Value); err != nil {
				log.Error("Node IPAM cannot read; matching pools as if it had no labels", "node", n, "err", err)
			} else {
				info.labels = res.GetMeta().Labels
			}
		}
		s.nodes[n] = info
	}
	return s
}

func decodePool(kv *mvccpb.KeyValue) (*poolInfo, error) {
	r, err := datastore.Decode(datastore.KindIPPool, kv.Value)
	if err != nil {
		return nil, err
	}
	pool := r.(*datastore.IPPool)
	cidr, err := netip.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("spec.cidr: %w", err)
	}
	cidr = cidr.Masked()
	bits := pool.Spec.EffectiveBlockSize()
	if bits < cidr.Bits() || bits > cidr.Addr().BitLen() || cidr.Addr().BitLen()-bits > maxBlockHostBits {
		return nil, fmt.Errorf("blockSize /%d does not suit pool %s", bits, cidr)
	}
	p := &poolInfo{name: pool.Metadata.Name, cidr: cidr, blockBits: bits, disabled: pool.Spec.Disabled, createRev: kv.CreateRevision}
	if p.sel, err = selector.Parse(pool.Spec.NodeSelector); err != nil {
		p.sel = nil
	}
	return p, nil
}

// poolOf is the pool holding ip, enabled or not.
func (s *snapshot) poolOf(ip netip.Addr) *poolInfo {
	for _, p := range s.pools {
		if p.cidr.Contains(ip) {
			return p
		}
	}
	return nil
}

// poolsFor lists the enabled pools of the family that select node.
func (s *snapshot) poolsFor(node string, fam Family) []*poolInfo {
	labels := s.nodes[node].labels
	var out []*poolInfo
	for _, p := range s.pools {
		if !p.disabled && p.family() == fam && p.selects(labels) {
			out = append(out, p)
		}
	}
	return out
}

// families lists the families node has at least one pool for, IPv4 first.
func (s *snapshot) families(node string) []Family {
	var out []Family
	for _, f := range []Family{V4, V6} {
		if len(s.poolsFor(node, f)) > 0 {
			out = append(out, f)
		}
	}
	return out
}

// eligible reports whether node may take new addresses of fam from the
// block: its pool exists, is enabled, of that family and selects node.
func (s *snapshot) eligible(block netip.Prefix, node string, fam Family) (*poolInfo, bool) {
	p := s.poolOf(block.Addr())
	if p == nil || p.disabled || p.family() != fam || !p.selects(s.nodes[node].labels) {
		return nil, false
	}
	return p, true
}

// guards fail a transaction if the snapshot no longer holds: a pool was
// added or changed, a used pool was deleted, IPAMConfig or a node changed.
func (s *snapshot) guards(usedPools map[string]*poolInfo, nodes []string) []clientv3.Cmp {
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(poolsPrefix), "<", s.rev+1).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(configKey), "=", s.configRev),
	}
	for _, p := range usedPools {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(datastore.Key(datastore.KindIPPool, p.name)), "=", p.createRev))
	}
	for _, n := range nodes {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nodeKey(n)), "=", s.nodes[n].rev))
	}
	return cmps
}
