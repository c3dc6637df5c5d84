package ipam

import (
	"context"
	"errors"
	"net/netip"
	"slices"
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
