// Package policy turns Policy resources and workload endpoints into
// iptables chains and ipsets, the way Calico Felix does.
//
// The work is split in three layers:
//
//   - the model (compile.go, model.go): policies, endpoints (local and
//     remote) and pools held in memory, with an incremental index of which
//     endpoints each selector matches and which policies apply to which
//     local endpoint;
//   - rendering (render*.go, chain.go, ipsets.go): pure functions from the
//     model to chains and sets, as iptables-restore and ipset text;
//   - programming (dataplane.go, apply.go, kernel.go, save_parse.go):
//     Dataplane diffs what it rendered against what it last wrote or read
//     back from the kernel and writes only the changed chains and set
//     members: one ipset batch, then one iptables-restore per family in
//     which every changed table is its own atomic section.
//
// Semantics and chain layout are documented for users in docs/policy.md.
package policy
