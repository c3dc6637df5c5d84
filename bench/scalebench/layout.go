package scalebench

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore/ipam"
)

// blockPut is one rewrite of an IPAM block the watch saw: its fill, the
// bytes stored (the compact layout) and what the legacy layout (every
// allocation in full in the block, as before the bitmap) would have
// stored for the same block, rebuilt from the handle records.
type blockPut struct {
	used, stored, legacy int
}

// legacyView follows the handle records so that a block rewrite can be
// sized in the legacy layout: each allocation with its handle, node,
// attributes and time, which the legacy block repeated.
type legacyView struct {
	byIP map[netip.Addr]*ipam.Handle
}

func newLegacyView(ctx context.Context, c *clientv3.Client) (*legacyView, error) {
	v := &legacyView{byIP: map[netip.Addr]*ipam.Handle{}}
	resp, err := c.Get(ctx, ipam.HandlesPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	for _, kv := range resp.Kvs {
		v.put(kv.Value)
	}
	return v, nil
}

func (v *legacyView) put(value []byte) {
	var h ipam.Handle
	if json.Unmarshal(value, &h) != nil {
		return
	}
	for _, a := range h.Addresses {
		v.byIP[a.IP] = &h
	}
}

func (v *legacyView) del(id string) {
	for ip, h := range v.byIP {
		if h.ID == id {
			delete(v.byIP, ip)
		}
	}
}

// apply takes one watch response: handle puts first (a transaction writes
// the block before the handle), then sizes the block puts, then handle
// deletes (a release drops the address from the block anyway).
func (v *legacyView) apply(evs []*clientv3.Event) []blockPut {
	var dels []string
	for _, ev := range evs {
		if id, ok := strings.CutPrefix(string(ev.Kv.Key), ipam.HandlesPrefix); ok {
			if ev.Type == clientv3.EventTypePut {
				v.put(ev.Kv.Value)
			} else {
				dels = append(dels, id)
			}
		}
	}
	var out []blockPut
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypePut || !strings.HasPrefix(string(ev.Kv.Key), ipam.BlocksPrefix) {
			continue
		}
		b, err := ipam.DecodeBlock(ev.Kv.Value)
		if err != nil {
			continue
		}
		for k := range b.Allocations {
			a := &b.Allocations[k]
			if h := v.byIP[a.IP]; h != nil && a.Handle == "" {
				a.Handle, a.Attributes, a.Time = h.ID, h.Attributes, h.Created
				if h.Node != "" {
					a.Node = h.Node
				}
			}
		}
		legacy, err := json.Marshal(b) // the legacy encoding: the Block as JSON
		if err != nil {
			continue
		}
		out = append(out, blockPut{used: b.Used(), stored: len(ev.Kv.Value), legacy: len(legacy)})
	}
	for _, id := range dels {
		v.del(id)
	}
	return out
}
