// Package routes programs the kernel for the Calyx agent over netlink: the
// route tables it owns (workload /32s, blackholes for local blocks, routes
// learned over BGP), the sysctls of its workload interfaces, and (in
// sub-package veth) the veth plumbing of each workload.
//
// Production code works on the network namespace the agent runs in; every
// constructor also accepts a namespace path so tests can aim it at a
// namespace they created.
package routes

// Route protocol numbers (rtm_protocol) that mark the routes Calyx owns. A
// Table only lists, changes and deletes routes carrying its own number;
// routes of any other protocol are never touched. The names are registered
// for iproute2 in deploy/iproute2/rt_protos.d/calyx.conf.
const (
	// ProtoWorkload ("calyx") marks local workload routes and the
	// blackholes of the node's own address blocks.
	ProtoWorkload = 201
	// ProtoBGP ("calyx-bgp") marks routes learned over BGP.
	ProtoBGP = 202
)
