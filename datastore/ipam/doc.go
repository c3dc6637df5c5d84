// Package ipam hands out workload addresses from IPPools, Calico style.
//
// A pool is cut into blocks (/26 and /122 by default). A node claims blocks
// (affinity) and allocates from them, so that BGP announces one aggregate per
// block instead of one route per workload. Everything lives in etcd under
// /calyx/v1/ipam/:
//
//	blocks/<addr>-<bits>          one Block: its affinity, a bitmap of taken addresses, the other nodes' (layout.go)
//	affinity/<node>/<addr>-<bits> the node's claim on the block (lists a node's blocks cheaply)
//	handles/<id>                  one Handle: the addresses a workload attachment holds
//
// Every write is one etcd transaction guarded by the mod revisions of what it
// read, so two nodes never hand out one address and a block and the handles
// pointing into it never disagree: the block update, the handle write and (on
// a claim) the affinity key commit together or not at all.
//
// Allocations and releases of one IPAM value go through one batching loop:
// requests that arrive while a transaction is in flight are planned together
// and committed in the next transaction (group commit), which keeps the
// common case at one etcd round trip and lets a burst of CNI ADDs share an
// fsync. See docs/ipam.md for the model and the calyxctl commands.
package ipam
