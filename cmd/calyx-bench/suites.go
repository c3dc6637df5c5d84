package main

import (
	"github.com/calyx-net/calyx/bench/bgpbench"
	"github.com/calyx-net/calyx/bench/cnibench"
	"github.com/calyx-net/calyx/bench/footbench"
	"github.com/calyx-net/calyx/bench/ipambench"
	"github.com/calyx-net/calyx/bench/kubebench"
	"github.com/calyx-net/calyx/bench/netbench"
	"github.com/calyx-net/calyx/bench/policybench"
	"github.com/calyx-net/calyx/bench/scalebench"
)

// suites run in this order; each measures itself beside its peer.
var suites = []suite{
	{"ipam", ipambench.Run},
	{"policy", policybench.Run},
	{"cni", cnibench.Run},
	{"net", netbench.Run},
	{"footprint", footbench.Run},
	{"bgp", bgpbench.Run},
	{"kube", kubebench.Run},
	{"scale", scalebench.Run},
}
