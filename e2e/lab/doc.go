// Package lab emulates a multi-host Calyx cluster on one machine with
// network namespaces, for the end-to-end suites and for `calyx-lab`.
//
// A lab is:
//
//   - a fabric: one namespace holding a bridge (198.18.0.254/24) that every
//     other lab namespace is plugged into with a veth pair;
//   - N host namespaces (198.18.0.1..N), each with ip_forward=1, a default
//     route via the fabric bridge and its own calyx-agent;
//   - etcd (the etcd binary): one member in its own namespace
//     (198.18.0.250), or a Raft cluster of 3 or 5 members, each in a
//     namespace of its own (198.18.0.250, .249, ...; Options.EtcdMembers);
//   - optionally a BIRD top-of-rack router (198.18.0.253, AS 65000);
//   - workload namespaces wired through the real calyx CNI plugin via libcni,
//     exactly as a container runtime does.
//
// Every kernel object carries the lab's prefix (see Prefix): namespaces are
// named "<prefix>fabric", "<prefix>etcd" (and "<prefix>etcd2" ...),
// "<prefix>tor", "<prefix>h1" ...,
// "<prefix>w-NAME"; every link lives inside those namespaces and dies with
// them. Nothing is created in the root namespace.
//
// Processes (etcd, BIRD, the agents) are started detached (own session and
// process group) so that a lab outlives the `calyx-lab up` that made it.
// Their PIDs live in the state file of the lab directory; Down kills them,
// then every process still inside a namespace with the lab's prefix, then
// the namespaces. Down works from a partial state file or none at all, so
// it recovers a lab left behind by a crash, and running it twice is fine.
//
// Layout of the lab directory (Options.Dir):
//
//	state.json          what exists (see State); removed by Down
//	lock                serialises the CLI invocations that change the lab
//	logs/               etcd1.log (etcdN.log), bird.log, hostN-agent.log; kept by Down
//	etcd/etcdN/         each etcd member's data
//	hostN/agent.sock    the agents' sockets (the CNI conflists point here)
//	cni/                the conflists and libcni's cache
//	tor/                bird.conf and bird.ctl
package lab
