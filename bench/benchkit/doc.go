// Package benchkit holds what the benchmarks (bench/ipambench,
// bench/policybench, bench/cnibench, bench/netbench, bench/bgpbench) share:
// finding or building the Calyx binaries, the start and end of a Run around
// its work directory, creating lab namespaces in one batch, and the
// statistics the figures are made of. Code runs inside a namespace with
// routes/netns.Do. Only bench/ and cmd/calyx-bench may import bench/
// packages (make lint checks it).
package benchkit
