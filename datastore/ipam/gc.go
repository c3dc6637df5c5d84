package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
)

// Report says what a garbage collection released or repaired.
type Report struct {
	// Released are leaked handles: no WorkloadEndpoint names them.
	Released []ReleasedHandle `json:"released,omitempty"`
	// FreedOrphans are addresses held in blocks for handles that do not
	// exist.
	FreedOrphans []netip.Addr `json:"freedOrphans,omitempty"`
	// RestoredHandles are handle records rebuilt from their block entries
	// (their endpoint exists).
	RestoredHandles []string `json:"restoredHandles,omitempty"`
	// FixedHandles are handles that listed addresses they did not hold.
	FixedHandles []string `json:"fixedHandles,omitempty"`
	// ReleasedBlocks are empty blocks whose affinity was released.
	ReleasedBlocks []netip.Prefix `json:"releasedBlocks,omitempty"`
	// FixedAffinities are affinity keys removed or restored to match
	// their block.
	FixedAffinities []string `json:"fixedAffinities,omitempty"`
	// Skipped counts repairs not made because the record changed under
	// gc (it is in use); the next run looks again.
	Skipped int `json:"skipped,omitempty"`
	// Kept are leaked-looking allocations gc did not release because their
	// workload might still exist: their node is registered and this gc
	// cannot see (or saw) the node's workloads. That node's agent, which
	// can, releases them.
	Kept []KeptHandle `json:"kept,omitempty"`
	// Waiting says why gc released nothing at all: records it cannot read
	// might name the addresses it would free.
	Waiting string `json:"waiting,omitempty"`
}

// KeptHandle is an allocation gc left alone, and why.
type KeptHandle struct {
	Handle string `json:"handle"`
	Node   string `json:"node,omitempty"`
	Reason string `json:"reason"`
}

// InUseFunc reports whether the workload of an attachment on this node
// might still exist (its interface is there, an ADD for it is running):
// the agent's own view of its workloads. gc never releases such a handle.
type InUseFunc func(h *Handle) bool

// SetInUse gives gc of node the agent's view of its workloads. Without it
// gc releases leaked allocations only of nodes that are not registered.
func (i *IPAM) SetInUse(node string, fn InUseFunc) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.inUseNode, i.inUse = node, fn
}

// ErrUnreadableRecords: gc released nothing because some WorkloadEndpoint
// or handle could not be read or decoded; it waits until they can be.
var ErrUnreadableRecords = errors.New("IPAM gc releases nothing while records it cannot read exist")

// mayExist says whether the workload of h (on node) might still exist, and
// why, for gc running for gcNode ("" for the whole cluster).
func (i *IPAM) mayExist(st *clusterState, h *Handle, gcNode string) (bool, string) {
	switch {
	case h.Node == "":
		return true, "no node recorded: nothing tells whether its workload runs"
	case !st.nodes[h.Node]:
		return false, "" // the node is gone, and its workloads with it
	}
	i.mu.Lock()
	inUseNode, inUse := i.inUseNode, i.inUse
	i.mu.Unlock()
	if inUse == nil || inUseNode != h.Node || gcNode != h.Node {
		return true, "node " + h.Node + " is registered: its agent, which sees its workloads, releases it"
	}
	if inUse(h) {
		return true, "its workload's interface is still on " + h.Node
	}
	return false, ""
}

// ReleasedHandle is one leaked handle gc released.
type ReleasedHandle struct {
	Handle    string       `json:"handle"`
	Node      string       `json:"node,omitempty"`
	Endpoint  string       `json:"endpoint"`
	Addresses []netip.Addr `json:"addresses"`
	Age       string       `json:"age"`
}

// Empty reports whether gc found nothing to do.
func (r *Report) Empty() bool {
	return len(r.Released)+len(r.FreedOrphans)+len(r.RestoredHandles)+len(r.FixedHandles)+len(r.ReleasedBlocks)+len(r.FixedAffinities)+r.Skipped == 0
}

// GC releases allocations whose handle names a WorkloadEndpoint that does
// not exist and that are older than grace, frees block entries whose handle
// record is missing, drops handle entries their block does not hold,
// releases empty blocks of unregistered nodes (and blocks of no node) and
// repairs affinity keys. Each repair is its own guarded transaction, so a
// record that changes meanwhile is left alone. Everything released is
// logged.
func (i *IPAM) GC(ctx context.Context, grace time.Duration) (Report, error) {
	return i.gc(ctx, "", grace)
}

// GCNode is GC limited to one node's handles and blocks: what the agent
// runs periodically for itself.
func (i *IPAM) GCNode(ctx context.Context, node string, grace time.Duration) (Report, error) {
	if node == "" {
		return Report{}, errors.New("GCNode: no node given")
	}
	return i.gc(ctx, node, grace)
}

func (i *IPAM) gc(ctx context.Context, node string, grace time.Duration) (Report, error) {
	var rep Report
	st, err := readState(ctx, i.etcd)
	if err != nil {
		return rep, err
	}
	now := i.now()
	old := func(t time.Time) bool { return now.Sub(t) >= grace }
	var errs []error
	note := func(done bool, err error) bool {
		if err != nil {
			errs = append(errs, err)
		} else if !done {
			rep.Skipped++
		}
		return done && err == nil
	}

	// Nothing is released while a record gc cannot read might be the
	// endpoint (or handle) that holds an address: it reports and waits.
	var unreadable []string
	for _, p := range st.unreadable {
		if strings.HasPrefix(p.Subject, datastore.KindPrefix(datastore.KindWorkloadEndpoint)) || strings.HasPrefix(p.Subject, HandlesPrefix) {
			unreadable = append(unreadable, p.Subject)
		}
	}
	if len(unreadable) > 0 {
		rep.Waiting = fmt.Sprintf("%d records cannot be read or decoded (%s): fix or delete them, then gc runs again", len(unreadable), strings.Join(unreadable, ", "))
		i.log.Warn("IPAM gc releases nothing while records cannot be read", "records", unreadable)
		errs = append(errs, fmt.Errorf("%w: %s", ErrUnreadableRecords, rep.Waiting))
	}
	keep := func(h *Handle) bool {
		if len(unreadable) > 0 {
			return true
		}
		if exists, why := i.mayExist(st, h, node); exists {
			rep.Kept = append(rep.Kept, KeptHandle{Handle: h.ID, Node: h.Node, Reason: why})
			return true
		}
		return false
	}

	// Leaked handles.
	for _, id := range sortedKeys(st.handles) {
		h := st.handles[id]
		if (node != "" && h.Node != node) || h.Endpoint == "" || st.endpoints[h.Endpoint] != nil || !old(h.Created) {
			continue
		}
		if keep(h) {
			continue
		}
		if note(i.releaseHandleAt(ctx, id, st.handleRevs[id])) {
			age := now.Sub(h.Created).Round(time.Second)
			i.log.Warn("IPAM gc released a leaked allocation", "handle", id, "node", h.Node, "endpoint", h.Endpoint, "addresses", h.IPs(), "age", age)
			rep.Released = append(rep.Released, ReleasedHandle{Handle: id, Node: h.Node, Endpoint: h.Endpoint, Addresses: h.IPs(), Age: age.String()})
		}
	}

	// Handles listing addresses their block does not give them.
	for _, id := range sortedKeys(st.handles) {
		h := st.handles[id]
		if (node != "" && h.Node != node) || !old(h.Created) || st.endpoints[h.Endpoint] == nil && h.Endpoint != "" {
			continue // leaked ones were released above
		}
		var keep []HandleAddress
		for _, a := range h.Addresses {
			if b := st.blocks[a.Block]; b != nil {
				if al, ok := b.Lookup(a.IP); ok && al.Handle == id {
					keep = append(keep, a)
				}
			}
		}
		if len(keep) != len(h.Addresses) && note(i.rewriteHandle(ctx, h, st.handleRevs[id], keep, st)) {
			i.log.Warn("IPAM gc dropped addresses a handle did not hold", "handle", id, "kept", len(keep), "had", len(h.Addresses))
			rep.FixedHandles = append(rep.FixedHandles, id)
		}
	}

	// Block entries whose handle record is missing: the record is
	// rebuilt from the entries when their endpoint exists, else the
	// addresses are freed.
	orphans := map[string][]Allocation{} // handle -> its entries
	for _, cidr := range sortedPrefixes(st.blocks) {
		b := st.blocks[cidr]
		for _, a := range b.Allocations {
			if st.handles[a.Handle] == nil && (node == "" || a.Node == node) {
				orphans[a.Handle] = append(orphans[a.Handle], a)
			}
		}
	}
	freeIn := map[netip.Prefix][]Allocation{}
	for _, id := range sortedKeys(orphans) {
		entries := orphans[id]
		if id == "" {
			// Entries of compact blocks that no handle lists: the record
			// is rebuilt under the attachment's handle when an endpoint
			// has the address and says which attachment it is; one an
			// endpoint has without saying so is kept; the rest is freed.
			rebuilt := map[string][]Allocation{}
			entries = slices.DeleteFunc(slices.Clone(entries), func(a Allocation) bool {
				if a.Endpoint == "" || st.endpoints[a.Endpoint] == nil {
					return false
				}
				if hid, ok := st.rebuiltHandle(a); ok {
					a.Node, a.Handle = st.endpoints[a.Endpoint].Spec.Node, hid
					rebuilt[hid] = append(rebuilt[hid], a)
				} else {
					rep.Kept = append(rep.Kept, KeptHandle{Node: a.Node, Reason: fmt.Sprintf("%s: no handle lists it but endpoint %q has it", a.IP, a.Endpoint)})
				}
				return true
			})
			for _, hid := range sortedKeys(rebuilt) {
				if note(i.restoreHandle(ctx, hid, rebuilt[hid], st)) {
					i.log.Warn("IPAM gc rebuilt a missing handle record from the endpoint that has its addresses", "handle", hid, "endpoint", rebuilt[hid][0].Endpoint)
					rep.RestoredHandles = append(rep.RestoredHandles, hid)
				}
			}
			if len(entries) == 0 {
				continue
			}
		} else if ep := entries[0].Endpoint; ep != "" && st.endpoints[ep] != nil {
			if note(i.restoreHandle(ctx, id, entries, st)) {
				i.log.Warn("IPAM gc rebuilt a missing handle record from its block entries", "handle", id, "endpoint", ep)
				rep.RestoredHandles = append(rep.RestoredHandles, id)
			}
			continue
		}
		if id != "" && keep(&Handle{ID: id, Node: entries[0].Node, Attributes: entries[0].Attributes}) {
			continue
		}
		for _, a := range entries {
			if id == "" && keep(&Handle{Node: a.Node}) {
				continue // entries no handle lists are judged one by one
			}
			if old(a.Time) {
				cidr := st.blockHolding(a.IP).Prefix
				freeIn[cidr] = append(freeIn[cidr], a)
			}
		}
	}
	for _, cidr := range sortedPrefixes(freeIn) {
		if note(i.freeOrphans(ctx, cidr, st.blockRevs[cidr], freeIn[cidr])) {
			for _, a := range freeIn[cidr] {
				i.log.Warn("IPAM gc freed an address whose handle record is missing", "ip", a.IP, "handle", a.Handle, "node", a.Node)
				rep.FreedOrphans = append(rep.FreedOrphans, a.IP)
			}
		}
	}

	// Releases above may have emptied blocks: look again before judging
	// blocks and affinities.
	if !rep.Empty() {
		if st, err = readState(ctx, i.etcd); err != nil {
			return rep, errors.Join(append(errs, err)...)
		}
	}
	released := map[netip.Prefix]bool{}

	// Blocks nobody may keep: no affinity, or an unregistered node.
	if node == "" {
		for _, cidr := range sortedPrefixes(st.blocks) {
			b := st.blocks[cidr]
			if b.Empty() && old(b.Updated) && (b.Affinity == "" || !st.nodes[b.Affinity]) &&
				note(i.deleteEmptyBlock(ctx, b, st.blockRevs[cidr])) {
				i.log.Info("IPAM gc released an empty block of no registered node", "block", cidr, "node", b.Affinity)
				rep.ReleasedBlocks = append(rep.ReleasedBlocks, cidr)
				released[cidr] = true
			}
		}
	}

	// Affinity keys that disagree with their block.
	for _, n := range sortedKeys(st.affinities) {
		if node != "" && n != node {
			continue
		}
		for _, cidr := range sortedPrefixes(st.affinities[n]) {
			if b := st.blocks[cidr]; (b == nil || b.Affinity != n) && note(i.deleteStrayAffinity(ctx, n, cidr, st)) {
				rep.FixedAffinities = append(rep.FixedAffinities, AffinityKey(n, cidr))
			}
		}
	}
	for _, cidr := range sortedPrefixes(st.blocks) {
		b := st.blocks[cidr]
		if b.Affinity == "" || (node != "" && b.Affinity != node) || released[cidr] {
			continue
		}
		if _, ok := st.affinities[b.Affinity][cidr]; !ok && note(i.restoreAffinity(ctx, b, st.blockRevs[cidr])) {
			rep.FixedAffinities = append(rep.FixedAffinities, AffinityKey(b.Affinity, cidr))
		}
	}
	if !rep.Empty() {
		i.log.Info("IPAM gc done", "released", len(rep.Released), "freed_orphans", len(rep.FreedOrphans),
			"fixed_handles", len(rep.FixedHandles), "released_blocks", len(rep.ReleasedBlocks), "fixed_affinities", len(rep.FixedAffinities), "skipped", rep.Skipped)
	}
	return rep, errors.Join(errs...)
}

// releaseHandleAt releases the handle if it is still at revision rev,
// retrying while only its blocks change. It reports whether it released.
func (i *IPAM) releaseHandleAt(ctx context.Context, id string, rev int64) (bool, error) {
	for attempt := 0; attempt < 20; attempt++ {
		resp, err := i.etcd.Get(ctx, HandleKey(id))
		if err != nil {
			return false, fmt.Errorf("reading handle %q: %w", id, err)
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != rev {
			return false, nil // released or reallocated meanwhile
		}
		h, err := decodeHandle(resp.Kvs[0].Value)
		if err != nil {
			h = &Handle{ID: id} // unreadable: delete the record alone
		}
		blocks, revs, err := i.readBlocks(ctx, handleBlocks(h))
		if err != nil {
			return false, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(HandleKey(id)), "=", rev)}
		var ops []clientv3.Op
		now := i.now().UTC()
		for cidr, b := range blocks {
			changed := false
			for _, a := range h.Addresses {
				if a.Block == cidr && b.release(a.IP, id) {
					changed = true
				}
			}
			if changed {
				b.Updated = now
				val, err := b.encode()
				if err != nil {
					return false, err
				}
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(BlockKey(cidr)), "=", revs[cidr]))
				ops = append(ops, clientv3.OpPut(BlockKey(cidr), string(val)))
			}
		}
		ops = append(ops, clientv3.OpDelete(HandleKey(id)))
		tr, err := i.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return false, fmt.Errorf("releasing handle %q: %w", id, err)
		}
		if tr.Succeeded {
			return true, nil
		}
	}
	return false, nil
}

func handleBlocks(h *Handle) []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, a := range h.Addresses {
		if !seen[a.Block] {
			seen[a.Block] = true
			out = append(out, a.Block)
		}
	}
	return out
}

// readBlocks reads blocks in one round trip; absent ones are left out.
func (i *IPAM) readBlocks(ctx context.Context, cidrs []netip.Prefix) (map[netip.Prefix]*Block, map[netip.Prefix]int64, error) {
	blocks, revs := map[netip.Prefix]*Block{}, map[netip.Prefix]int64{}
	var rs readSet
	var decodeErr error
	for _, cidr := range cidrs {
		rs.add(clientv3.OpGet(BlockKey(cidr)), func(kvs []*mvccpb.KeyValue) {
			if len(kvs) == 0 {
				return
			}
			b, err := DecodeBlock(kvs[0].Value)
			if err != nil {
				decodeErr = fmt.Errorf("block %s: %w", cidr, err)
				return
			}
			blocks[cidr], revs[cidr] = b, kvs[0].ModRevision
		})
	}
	if rs.empty() {
		return blocks, revs, nil
	}
	if _, err := rs.run(ctx, i.etcd); err != nil {
		return nil, nil, err
	}
	return blocks, revs, decodeErr
}

// rewriteHandle keeps only the addresses its blocks really give it (guarded
// by the revisions gc read), or deletes it when none is left.
func (i *IPAM) rewriteHandle(ctx context.Context, h *Handle, rev int64, keep []HandleAddress, st *clusterState) (bool, error) {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(HandleKey(h.ID)), "=", rev)}
	for _, cidr := range handleBlocks(h) {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(BlockKey(cidr)), "=", st.blockRevs[cidr]))
	}
	op := clientv3.OpDelete(HandleKey(h.ID))
	if len(keep) > 0 {
		c := *h
		c.Addresses = keep
		val, err := json.Marshal(&c)
		if err != nil {
			return false, err
		}
		op = clientv3.OpPut(HandleKey(h.ID), string(val))
	}
	return i.guarded(ctx, "repairing handle "+h.ID, cmps, op)
}

// freeOrphans frees block entries whose handles have no record.
func (i *IPAM) freeOrphans(ctx context.Context, cidr netip.Prefix, rev int64, orphans []Allocation) (bool, error) {
	resp, err := i.etcd.Get(ctx, BlockKey(cidr))
	if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != rev {
		return false, err
	}
	b, err := DecodeBlock(resp.Kvs[0].Value)
	if err != nil {
		return false, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(BlockKey(cidr)), "=", rev)}
	for _, a := range orphans {
		b.release(a.IP, a.Handle)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(HandleKey(a.Handle)), "=", 0))
	}
	b.Updated = i.now().UTC()
	val, err := b.encode()
	if err != nil {
		return false, err
	}
	return i.guarded(ctx, "freeing orphans in block "+cidr.String(), cmps, clientv3.OpPut(BlockKey(cidr), string(val)))
}

// restoreHandle writes the record of a handle from its block entries.
func (i *IPAM) restoreHandle(ctx context.Context, id string, entries []Allocation, st *clusterState) (bool, error) {
	first := entries[0]
	h := Handle{ID: id, Node: first.Node, Attributes: first.Attributes, Created: first.Time}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(HandleKey(id)), "=", 0)}
	for _, a := range entries {
		cidr := st.blockHolding(a.IP).Prefix
		h.Addresses = append(h.Addresses, HandleAddress{IP: a.IP, Block: cidr})
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(BlockKey(cidr)), "=", st.blockRevs[cidr]))
	}
	val, err := json.Marshal(&h)
	if err != nil {
		return false, err
	}
	return i.guarded(ctx, "restoring handle "+id, cmps, clientv3.OpPut(HandleKey(id), string(val)))
}

// deleteEmptyBlock deletes an empty block and its affinity key.
func (i *IPAM) deleteEmptyBlock(ctx context.Context, b *Block, rev int64) (bool, error) {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(BlockKey(b.Prefix)), "=", rev)}
	ops := []clientv3.Op{clientv3.OpDelete(BlockKey(b.Prefix))}
	if b.Affinity != "" {
		ops = append(ops, clientv3.OpDelete(AffinityKey(b.Affinity, b.Prefix)))
	}
	return i.guarded(ctx, "releasing block "+b.Prefix.String(), cmps, ops...)
}

// deleteStrayAffinity removes an affinity key whose block is gone or names
// another node.
func (i *IPAM) deleteStrayAffinity(ctx context.Context, node string, cidr netip.Prefix, st *clusterState) (bool, error) {
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(AffinityKey(node, cidr)), "=", st.affinities[node][cidr]),
		clientv3.Compare(clientv3.ModRevision(BlockKey(cidr)), "=", st.blockRevs[cidr]),
	}
	return i.guarded(ctx, "removing affinity "+AffinityKey(node, cidr), cmps, clientv3.OpDelete(AffinityKey(node, cidr)))
}

// restoreAffinity writes the missing affinity key of a block.
func (i *IPAM) restoreAffinity(ctx context.Context, b *Block, rev int64) (bool, error) {
	key := AffinityKey(b.Affinity, b.Prefix)
	val, _ := json.Marshal(affinityRecord{Node: b.Affinity, CIDR: b.Prefix, Pool: b.Pool})
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(BlockKey(b.Prefix)), "=", rev),
		clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
	}
	return i.guarded(ctx, "restoring affinity "+key, cmps, clientv3.OpPut(key, string(val)))
}

// guarded commits ops if cmps hold; false means the records moved on.
func (i *IPAM) guarded(ctx context.Context, what string, cmps []clientv3.Cmp, ops ...clientv3.Op) (bool, error) {
	resp, err := i.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return resp.Succeeded, nil
}

// ReleaseEmptyAffinities gives up node's blocks that have been empty for at
// least grace, so other nodes can claim them. It returns the blocks
// released.
func (i *IPAM) ReleaseEmptyAffinities(ctx context.Context, node string, grace time.Duration) ([]netip.Prefix, error) {
	resp, err := i.etcd.Get(ctx, nodeAffinityPrefix(node), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing the blocks of node %q: %w", node, err)
	}
	var cidrs []netip.Prefix
	for _, kv := range resp.Kvs {
		if _, cidr, err := parseAffinityKey(string(kv.Key)); err == nil {
			cidrs = append(cidrs, cidr)
		}
	}
	blocks, revs, err := i.readBlocks(ctx, cidrs)
	if err != nil {
		return nil, err
	}
	now := i.now()
	var released []netip.Prefix
	var errs []error
	for _, cidr := range cidrs {
		b := blocks[cidr]
		if b == nil || b.Affinity != node || !b.Empty() || now.Sub(b.Updated) < grace {
			continue
		}
		ok, err := i.deleteEmptyBlock(ctx, b, revs[cidr])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			i.log.Info("released the affinity of an empty IPAM block", "node", node, "block", cidr, "empty_for", now.Sub(b.Updated).Round(time.Second))
			released = append(released, cidr)
		}
	}
	return released, errors.Join(errs...)
}

// RunGC runs GCNode and ReleaseEmptyAffinities for node every interval
// until ctx ends: the agent's periodic clean-up. Failures are logged and
// retried at the next tick.
func (i *IPAM) RunGC(ctx context.Context, node string, every, grace time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := i.GCNode(ctx, node, grace); err != nil && ctx.Err() == nil {
			i.log.Warn("IPAM gc failed; retrying next interval", "node", node, "err", err)
		}
		if _, err := i.ReleaseEmptyAffinities(ctx, node, grace); err != nil && ctx.Err() == nil {
			i.log.Warn("releasing empty IPAM blocks failed; retrying next interval", "node", node, "err", err)
		}
	}
}
