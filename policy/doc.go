// Package policy turns Policy resources and workload endpoints into
// iptables chains and ipsets, the way Calico Felix does.
//
// The work is split in three layers:
//
//   - the model (compile.go, model.go, setrefs.go): policies, endpoints
//     (local and remote) and pools held in memory, with an incremental
//     index of which endpoints each selector of an active policy's rules
//     matches and which policies apply to which local endpoint;
//   - rendering (render*.go, chain.go, ipsets.go): pure functions from the
//     model to chains and sets, as iptables-restore and ipset text;
//   - programming (dataplane.go, apply.go, kernel.go, save_parse.go,
//     netlink_sets.go, program_endpoint.go): Dataplane diffs what it
//     rendered against what it last wrote or read back from the kernel and
//     writes only the changed chains and set members: one ipset batch (over
//     netlink, without a process, when only members of existing sets
//     change), then one iptables-restore per family in which every changed
//     table is its own atomic section.
//
// Only policies active on this node (selecting at least one local
// endpoint) are rendered: their chains and the sets their rules use.
// Other policies hold no set and their selectors are not evaluated, so a
// node's work grows with what its own endpoints need, not with the
// cluster (setrefs.go).
//
// Local endpoints that no policy selects have no chains of their own: they
// are (address, interface) entries of the open sets, which one rule at the
// top of each dispatch chain matches. A new such endpoint is therefore set
// members only, which is what keeps ProgramEndpoint (the CNI ADD path)
// free of process runs.
//
// Semantics and chain layout are documented for users in docs/policy.md.
package policy
