package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// IPInfo says who holds one address (calyxctl ipam show --ip).
type IPInfo struct {
	IP netip.Addr `json:"ip"`
	// Allocated is false for a free address, in a block or not.
	Allocated bool `json:"allocated"`
	// Block is the block whose range holds the address (none: no node
	// claimed that part of the pool yet).
	Block         netip.Prefix `json:"block,omitzero"`
	Pool          string       `json:"pool,omitempty"`
	BlockAffinity string       `json:"blockAffinity,omitempty"`
	// Allocation is the block's entry: handle, node, pod, endpoint.
	Allocation *Allocation `json:"allocation,omitempty"`
	// HandleListsIt says whether the handle's own record lists the
	// address; false with an allocation is an inconsistency ipam gc repairs.
	HandleListsIt bool `json:"handleListsIt"`
}

// LookupIP reads, without changing anything, which block holds ip and
// whether and to whom it is allocated.
func (i *IPAM) LookupIP(ctx context.Context, ip netip.Addr) (IPInfo, error) {
	ip = ip.Unmap()
	info := IPInfo{IP: ip}
	b, _, err := i.blockHoldingIP(ctx, ip)
	if errors.Is(err, ErrNotAllocated) {
		return info, nil // no block: free
	}
	if err != nil {
		return info, err
	}
	info.Block, info.Pool, info.BlockAffinity = b.Prefix, b.Pool, b.Affinity
	a, ok := b.Lookup(ip)
	if !ok {
		return info, nil
	}
	info.Allocated, info.Allocation = true, &a
	if err := i.resolveHolder(ctx, &a); err != nil {
		return info, err
	}
	if a.Handle == "" {
		return info, nil // no handle lists it: gc frees it
	}
	resp, err := i.etcd.Get(ctx, HandleKey(a.Handle))
	if err != nil {
		return info, err
	}
	if len(resp.Kvs) > 0 {
		if h, err := decodeHandle(resp.Kvs[0].Value); err == nil {
			info.HandleListsIt = slices.ContainsFunc(h.Addresses, func(x HandleAddress) bool { return x.IP == ip })
		}
	}
	return info, nil
}

// resolveHolder fills in the handle of an allocation read from a compact
// block, which does not name it, from the handle record that lists the
// address: a scan of every handle, for operator commands only. It leaves
// the handle empty when none does.
func (i *IPAM) resolveHolder(ctx context.Context, a *Allocation) error {
	if a.Handle != "" {
		return nil
	}
	resp, err := i.etcd.Get(ctx, HandlesPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("listing IPAM handles: %w", err)
	}
	for _, kv := range resp.Kvs {
		h, err := decodeHandle(kv.Value)
		if err != nil || !slices.ContainsFunc(h.Addresses, func(x HandleAddress) bool { return x.IP == a.IP }) {
			continue
		}
		a.Handle, a.Attributes, a.Time = h.ID, h.Attributes, h.Created
		if h.Node != "" {
			a.Node = h.Node
		}
		return nil
	}
	return nil
}
