package ipam

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"time"
)

// Attributes describe who holds an allocation; they are stored with it.
// Endpoint is the name of the WorkloadEndpoint the agent writes for the
// attachment: garbage collection releases a handle whose endpoint is gone.
type Attributes struct {
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Endpoint  string `json:"endpoint,omitempty"`
}

// Allocation is one address taken in a block.
type Allocation struct {
	IP     netip.Addr `json:"ip"`
	Handle string     `json:"handle"`
	// Node is the node the workload runs on.
	Node string `json:"node,omitempty"`
	Attributes
	// Borrowed marks an address handed out by Node from a block whose
	// affinity is another node (or none): the block's node keeps
	// announcing the block, Node announces this /32 (/128).
	Borrowed bool      `json:"borrowed,omitempty"`
	Time     time.Time `json:"time"`
}

// Block is one block of a pool, as stored at blocks/<cidr>.
type Block struct {
	Prefix netip.Prefix `json:"cidr"`
	// Pool is the pool the block was cut from (informational).
	Pool string `json:"pool,omitempty"`
	// Affinity is the node that claimed the block and announces it; empty
	// for a block nobody claims.
	Affinity string `json:"affinity,omitempty"`
	// Updated is the time of the last write; for an empty block it is how
	// long it has been empty.
	Updated time.Time `json:"updated"`
	// Cursor is where the search for a free address starts, so a released
	// address is not handed out again at once.
	Cursor int `json:"cursor,omitempty"`
	// Allocations are sorted by address.
	Allocations []Allocation `json:"allocations,omitempty"`

	used []uint64 // bitmap of taken ordinals, rebuilt on decode
	// hidden counts the taken addresses ForNode left out of Allocations.
	hidden int
}

// CIDR is the block's prefix (the aggregate BGP announces).
func (b *Block) CIDR() netip.Prefix { return b.Prefix }

// Size is the number of addresses in the block.
func (b *Block) Size() int { return 1 << hostBits(b.Prefix) }

// Used is the number of allocated addresses.
func (b *Block) Used() int { return len(b.Allocations) + b.hidden }

// Free is the number of free addresses.
func (b *Block) Free() int { return b.Size() - b.Used() }

// Empty reports whether no address is allocated.
func (b *Block) Empty() bool { return b.Used() == 0 }

// ForNode is the block as the agent of node needs it: whole if node holds
// it, else only the addresses node holds in it (the ones it borrowed, which
// it announces), with Used still counting all. Every agent follows every
// block, so at 5,000 nodes this is 10k blocks with 500k allocations of
// which an agent needs a handful. A block ForNode trimmed is for reading:
// the IPAM never writes one.
func (b *Block) ForNode(node string) *Block {
	if b.Affinity == node {
		return b
	}
	c := *b
	c.Allocations = nil
	for _, a := range b.Allocations {
		if a.Node == node {
			c.Allocations = append(c.Allocations, a)
		}
	}
	c.hidden = b.hidden + len(b.Allocations) - len(c.Allocations)
	return &c
}

// BorrowedBy lists the addresses node borrowed from this block: node
// announces each as a /32 (/128).
func (b *Block) BorrowedBy(node string) []netip.Addr {
	var out []netip.Addr
	for _, a := range b.Allocations {
		if a.Borrowed && a.Node == node {
			out = append(out, a.IP)
		}
	}
	return out
}

// Lookup returns the allocation of ip, if any.
func (b *Block) Lookup(ip netip.Addr) (Allocation, bool) {
	i, ok := b.find(ip)
	if !ok {
		return Allocation{}, false
	}
	return b.Allocations[i], true
}

func (b *Block) find(ip netip.Addr) (int, bool) {
	return slices.BinarySearchFunc(b.Allocations, ip, func(a Allocation, ip netip.Addr) int { return a.IP.Compare(ip) })
}

// DecodeBlock reads a stored block and checks that it is coherent. It reads
// both layouts: the compact one (blockRecord, written since the bitmap
// layout) and the legacy one (the Block as JSON with every allocation in
// full), which a cluster upgraded in place still holds until each block's
// next write. An allocation decoded from the compact layout has no Handle,
// Attributes or Time: its handle record holds them (see fillFromHandles).
func DecodeBlock(data []byte) (*Block, error) {
	var probe struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("decoding IPAM block: %w", err)
	}
	if probe.V == blockLayoutBitmap {
		return decodeCompact(data)
	}
	if probe.V != 0 {
		return nil, fmt.Errorf("decoding IPAM block: layout version %d is not known (this binary reads 0 and %d)", probe.V, blockLayoutBitmap)
	}
	var b Block
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decoding IPAM block: %w", err)
	}
	if err := b.index(); err != nil {
		return nil, err
	}
	return &b, nil
}

// index validates the block and builds the bitmap of taken ordinals.
func (b *Block) index() error {
	if !b.Prefix.IsValid() || b.Prefix.Masked() != b.Prefix || hostBits(b.Prefix) > maxBlockHostBits {
		return fmt.Errorf("IPAM block %q: not an aligned prefix of at most %d addresses", b.Prefix, 1<<maxBlockHostBits)
	}
	slices.SortFunc(b.Allocations, func(x, y Allocation) int { return x.IP.Compare(y.IP) })
	b.used = make([]uint64, (b.Size()+63)/64)
	if n := b.Size(); n < 64 {
		b.used[0] = ^uint64(0) << n // ordinals past the end are never free
	}
	for _, a := range b.Allocations {
		if !b.Prefix.Contains(a.IP) {
			return fmt.Errorf("IPAM block %s: allocation %s lies outside it", b.Prefix, a.IP)
		}
		o := ordinal(b.Prefix, a.IP)
		if b.taken(o) {
			return fmt.Errorf("IPAM block %s: %s is allocated twice", b.Prefix, a.IP)
		}
		b.used[o/64] |= 1 << (o % 64)
	}
	if b.Cursor < 0 || b.Cursor >= b.Size() {
		b.Cursor = 0
	}
	return nil
}

func (b *Block) taken(o int) bool { return b.used[o/64]&(1<<(o%64)) != 0 }

// clone is a deep copy a plan can change.
func (b *Block) clone() *Block {
	c := *b
	c.Allocations = slices.Clone(b.Allocations)
	c.used = slices.Clone(b.used)
	return &c
}

// nextFree finds a free ordinal at or after the cursor, wrapping around.
func (b *Block) nextFree() (int, bool) {
	if b.Used() >= b.Size() {
		return 0, false
	}
	if o, ok := b.firstFree(b.Cursor, b.Size()); ok {
		return o, true
	}
	return b.firstFree(0, b.Cursor)
}

// firstFree scans the bitmap a word at a time for a free ordinal in [lo, hi).
func (b *Block) firstFree(lo, hi int) (int, bool) {
	for i := lo; i < hi; {
		off := i % 64
		if word := ^b.used[i/64] >> off; word != 0 {
			if o := i + bits.TrailingZeros64(word); o < hi {
				return o, true
			}
			return 0, false
		}
		i += 64 - off
	}
	return 0, false
}

// take records an allocation; the caller checked the address is free.
func (b *Block) take(a Allocation) {
	o := ordinal(b.Prefix, a.IP)
	b.used[o/64] |= 1 << (o % 64)
	i, _ := b.find(a.IP)
	b.Allocations = slices.Insert(b.Allocations, i, a)
	b.Cursor = (o + 1) % b.Size()
}

// release frees ip if handle holds it (or the block does not say who
// does); it reports whether it did.
func (b *Block) release(ip netip.Addr, handle string) bool {
	i, ok := b.find(ip)
	// An allocation read from the compact layout names no handle: the
	// caller's handle record lists the address, and the transaction that
	// wrote both keeps them in step.
	if !ok || (b.Allocations[i].Handle != handle && b.Allocations[i].Handle != "") {
		return false
	}
	b.Allocations = slices.Delete(b.Allocations, i, i+1)
	o := ordinal(b.Prefix, ip)
	b.used[o/64] &^= 1 << (o % 64)
	return true
}

// newBlock is an empty block claimed by affinity.
func newBlock(cidr netip.Prefix, pool, affinity string, now time.Time) *Block {
	b := &Block{Prefix: cidr, Pool: pool, Affinity: affinity, Updated: now}
	_ = b.index() // an empty, aligned prefix cannot fail
	return b
}
