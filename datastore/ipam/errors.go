package ipam

import "errors"

// Sentinel errors, wrapped with detail; test them with errors.Is. The agent
// maps them to CNI errors.
var (
	// ErrPoolExhausted: no free address is left in the pools that serve the
	// node (its blocks are full, no block is free, nothing can be borrowed).
	ErrPoolExhausted = errors.New("IP pool exhausted")
	// ErrNoPoolForNode: no enabled pool of the family selects the node.
	ErrNoPoolForNode = errors.New("no IP pool for this node")
	// ErrOutsidePools: a requested address is in no pool.
	ErrOutsidePools = errors.New("address outside every IP pool")
	// ErrAddressInUse: a requested address is allocated to another handle.
	ErrAddressInUse = errors.New("address already in use")
	// ErrMaxBlocks: the node holds maxBlocksPerHost blocks and may not
	// claim another.
	ErrMaxBlocks = errors.New("node reached maxBlocksPerHost")
	// ErrBorrowForbidden: a requested address lies in another node's block
	// and IPAMConfig.strictAffinity forbids borrowing.
	ErrBorrowForbidden = errors.New("address is in another node's block and strictAffinity is set")
	// ErrNotAllocated: ReleaseIP found the address free already.
	ErrNotAllocated = errors.New("address is not allocated")
	// ErrContention: the transaction kept losing races; try again.
	ErrContention = errors.New("too much contention on IPAM blocks")
)
