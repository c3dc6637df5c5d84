// Package benchkit holds what the lab benchmarks (bench/cnibench,
// bench/netbench, bench/bgpbench) share: finding or building the Calyx
// binaries, the start and end of a Run around its work directory, running
// code inside a lab namespace, and the statistics the figures are made of.
package benchkit
