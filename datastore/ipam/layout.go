package ipam

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// blockLayoutBitmap is the "v" of the compact block layout.
//
// The legacy layout stored every allocation in full (handle, node, pod,
// endpoint, time: ~250 B each) in the one block key, which every ADD and DEL
// rewrites whole, so a write cost grew with the block's fill (a full /26 is
// ~15 KB). The handle record already holds all of that, written in the same
// transaction, so the block keeps only what must be decided under its mod
// revision: which ordinals are taken (a bitmap) and which addresses nodes
// other than the affinity hold (the borrowed ones the agents announce).
// An ADD then writes ~200 B of block whatever its fill.
const blockLayoutBitmap = 2

// blockRecord is the compact layout. The prefix is "prefix", not "cidr":
// a binary that only knows the legacy layout finds no prefix and refuses
// the block (it allocates nothing from it) instead of seeing it empty and
// handing out its addresses again.
type blockRecord struct {
	V        int          `json:"v"`
	Prefix   netip.Prefix `json:"prefix"`
	Pool     string       `json:"pool,omitempty"`
	Affinity string       `json:"affinity,omitempty"`
	Updated  time.Time    `json:"updated"`
	Cursor   int          `json:"cursor,omitempty"`
	// Used is the bitmap of taken ordinals in hex, 64 ordinals a word,
	// ordinal 0 in the lowest bit of the first word.
	Used string `json:"used"`
	// Others are the allocations of a node other than the affinity.
	Others []otherRecord `json:"others,omitempty"`
}

// otherRecord is an address held by another node than the block's.
type otherRecord struct {
	Ordinal  int    `json:"o"`
	Node     string `json:"node"`
	Borrowed bool   `json:"borrowed,omitempty"`
}

// encode writes the compact layout.
func (b *Block) encode() ([]byte, error) {
	if b.hidden > 0 {
		return nil, fmt.Errorf("IPAM block %s: a copy trimmed for one node (ForNode) is not written", b.Prefix)
	}
	r := blockRecord{V: blockLayoutBitmap, Prefix: b.Prefix, Pool: b.Pool, Affinity: b.Affinity, Updated: b.Updated, Cursor: b.Cursor}
	words := make([]byte, 0, 8*len(b.used))
	for k, w := range b.used {
		if k == 0 && b.Size() < 64 {
			w &= 1<<b.Size() - 1 // ordinals past the end are not stored
		}
		for s := 0; s < 64; s += 8 {
			words = append(words, byte(w>>s))
		}
	}
	r.Used = hex.EncodeToString(words)
	for _, a := range b.Allocations {
		if a.Node != b.Affinity || a.Borrowed {
			r.Others = append(r.Others, otherRecord{Ordinal: ordinal(b.Prefix, a.IP), Node: a.Node, Borrowed: a.Borrowed})
		}
	}
	return json.Marshal(&r)
}

// decodeCompact reads the compact layout back into a Block whose
// allocations carry the address, node and borrowed flag.
func decodeCompact(data []byte) (*Block, error) {
	var r blockRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decoding IPAM block: %w", err)
	}
	b := &Block{Prefix: r.Prefix, Pool: r.Pool, Affinity: r.Affinity, Updated: r.Updated, Cursor: r.Cursor}
	if err := b.index(); err != nil { // validates the prefix, sizes the bitmap
		return nil, err
	}
	raw, err := hex.DecodeString(r.Used)
	if err != nil || len(raw) != 8*len(b.used) {
		return nil, fmt.Errorf("IPAM block %s: bitmap %.40q is not %d hex bytes", b.Prefix, r.Used, 8*len(b.used))
	}
	others := make(map[int]otherRecord, len(r.Others))
	for _, o := range r.Others {
		if o.Ordinal < 0 || o.Ordinal >= b.Size() {
			return nil, fmt.Errorf("IPAM block %s: ordinal %d of node %q lies outside it", b.Prefix, o.Ordinal, o.Node)
		}
		others[o.Ordinal] = o
	}
	for o := 0; o < b.Size(); o++ {
		if raw[o/8]&(1<<(o%8)) == 0 {
			if _, ok := others[o]; ok {
				return nil, fmt.Errorf("IPAM block %s: ordinal %d has a node but is not taken", b.Prefix, o)
			}
			continue
		}
		a := Allocation{IP: addrAt(b.Prefix, o), Node: b.Affinity}
		if x, ok := others[o]; ok {
			a.Node, a.Borrowed = x.Node, x.Borrowed
		}
		b.Allocations = append(b.Allocations, a) // ordinal order is address order
		b.used[o/64] |= 1 << (o % 64)
	}
	return b, nil
}

// fillFromHandles gives the allocations of compact blocks the handle,
// attributes and time their handle records hold; an allocation no handle
// lists keeps an empty handle and the block's time (gc's grace counts from
// it). It is what check, gc and show work from.
func (st *clusterState) fillFromHandles() {
	for _, id := range sortedKeys(st.handles) {
		h := st.handles[id]
		for _, ha := range h.Addresses {
			b := st.blocks[ha.Block]
			if b == nil {
				continue
			}
			k, ok := b.find(ha.IP)
			if !ok || b.Allocations[k].Handle != "" {
				continue // not allocated, or another handle got there first (check reports it)
			}
			a := &b.Allocations[k]
			a.Handle, a.Attributes, a.Time = id, h.Attributes, h.Created
			if h.Node != "" {
				a.Node = h.Node
			}
		}
	}
	for _, b := range st.blocks {
		for k := range b.Allocations {
			if a := &b.Allocations[k]; a.Handle == "" && a.Time.IsZero() {
				a.Time = b.Updated
				a.Endpoint = st.endpointWith(a.IP)
			}
		}
	}
}

// endpointWith names a WorkloadEndpoint that has ip, if one does.
func (st *clusterState) endpointWith(ip netip.Addr) string {
	want := netip.PrefixFrom(ip, ip.BitLen()).String()
	for _, name := range sortedKeys(st.endpoints) {
		for _, n := range st.endpoints[name].Spec.IPNetworks {
			if n == want {
				return name
			}
		}
	}
	return ""
}

// rebuiltHandle is the handle of the attachment whose endpoint has the
// address of a compact block's entry no handle lists, when the endpoint
// names its container and interface.
func (st *clusterState) rebuiltHandle(a Allocation) (string, bool) {
	ep := st.endpoints[a.Endpoint]
	if ep == nil || ep.Spec.ContainerID == "" || ep.Spec.ContainerInterface == "" || ep.Spec.Node == "" {
		return "", false
	}
	return AttachmentHandle(ep.Spec.Node, ep.Spec.ContainerID, ep.Spec.ContainerInterface), true
}

// EncodeBlock is the stored form of b (the compact layout), checked as
// DecodeBlock checks what it reads: for tools that write blocks themselves
// (the scale benchmark's fake nodes). The IPAM writes its own.
func EncodeBlock(b *Block) ([]byte, error) {
	c := b.clone()
	if err := c.index(); err != nil {
		return nil, err
	}
	return c.encode()
}
