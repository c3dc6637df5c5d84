package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ReleaseIP frees one address whoever holds it: the operator's repair
// (calyxctl ipam release --ip). The address is removed from its block and
// from its handle's record (the record goes when it holds nothing else), in
// one transaction. It returns the allocation it freed.
func (i *IPAM) ReleaseIP(ctx context.Context, ip netip.Addr) (Allocation, error) {
	ip = ip.Unmap()
	for attempt := 0; attempt < 20; attempt++ {
		b, rev, err := i.blockHoldingIP(ctx, ip)
		if err != nil {
			return Allocation{}, err
		}
		a, ok := b.Lookup(ip)
		if !ok {
			return Allocation{}, fmt.Errorf("%s (block %s): %w", ip, b.Prefix, ErrNotAllocated)
		}
		// A handle listing ip cannot appear or go without changing the
		// block, which the transaction's guard sees.
		if err := i.resolveHolder(ctx, &a); err != nil {
			return Allocation{}, err
		}
		b.release(ip, a.Handle)
		b.Updated = i.now().UTC()
		val, err := b.encode()
		if err != nil {
			return Allocation{}, err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(BlockKey(b.Prefix)), "=", rev)}
		ops := []clientv3.Op{clientv3.OpPut(BlockKey(b.Prefix), string(val))}

		hk := HandleKey(a.Handle)
		hr, err := i.etcd.Get(ctx, hk)
		if err != nil {
			return Allocation{}, fmt.Errorf("reading handle %q: %w", a.Handle, err)
		}
		if len(hr.Kvs) == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hk), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(hk), "=", hr.Kvs[0].ModRevision))
			hop, err := handleWithout(hk, hr.Kvs[0].Value, ip)
			if err != nil {
				return Allocation{}, err
			}
			ops = append(ops, hop)
		}
		resp, err := i.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return Allocation{}, fmt.Errorf("releasing %s: %w", ip, err)
		}
		if resp.Succeeded {
			i.log.Warn("IPAM address released by hand", "ip", ip, "handle", a.Handle, "node", a.Node, "endpoint", a.Endpoint)
			return a, nil
		}
	}
	return Allocation{}, fmt.Errorf("releasing %s: %w", ip, ErrContention)
}

// blockHoldingIP finds and reads the block that holds ip, whatever the
// pools say now (the pool may be gone).
func (i *IPAM) blockHoldingIP(ctx context.Context, ip netip.Addr) (*Block, int64, error) {
	resp, err := i.etcd.Get(ctx, BlocksPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, 0, fmt.Errorf("listing IPAM blocks: %w", err)
	}
	for _, kv := range resp.Kvs {
		cidr, err := parseBlockKey(string(kv.Key))
		if err != nil || !cidr.Contains(ip) {
			continue
		}
		blocks, revs, err := i.readBlocks(ctx, []netip.Prefix{cidr})
		if err != nil {
			return nil, 0, err
		}
		if b := blocks[cidr]; b != nil {
			return b, revs[cidr], nil
		}
	}
	return nil, 0, fmt.Errorf("%s: no IPAM block holds it: %w", ip, ErrNotAllocated)
}

// handleWithout is the write that drops ip from a stored handle.
func handleWithout(key string, value []byte, ip netip.Addr) (clientv3.Op, error) {
	h, err := decodeHandle(value)
	if err != nil {
		return clientv3.OpDelete(key), nil // unreadable: it cannot be trusted anyway
	}
	h.Addresses = slices.DeleteFunc(h.Addresses, func(a HandleAddress) bool { return a.IP == ip })
	if len(h.Addresses) == 0 {
		return clientv3.OpDelete(key), nil
	}
	val, err := json.Marshal(h)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(key, string(val)), nil
}
