package bgpbench

import (
	"fmt"
	"net/netip"
	"strings"
)

// The scale benchmark's routers, on the lab fabric beside the hosts.
const (
	originIP  = "198.18.0.240" // the BIRD that originates the prefixes
	originAS  = 65100
	receiveIP = "198.18.0.241" // the BIRD that receives them, with a kernel protocol
	receiveAS = 65200
)

// Sides of the scale benchmark: the originating BIRD keeps one static
// protocol and one table per receiver, so that each receiver's transfer
// starts with its own `birdc enable` while both BGP sessions are already
// Established and idle.
const (
	sideCalyx = "calyx"
	sideBird  = "bird"
)

func staticProtocol(side string) string { return "routes_" + side }

// benchPrefixes is where the originated /32s live: 100.64.0.0/10 (shared
// address space), which holds 4M addresses and overlaps neither the lab
// fabric nor the workload pools. These are routes only; no packet is ever
// sent to them.
var benchPrefixes = netip.MustParsePrefix("100.64.0.0/10")

// benchPrefix is the i-th originated /32.
func benchPrefix(i int) netip.Prefix {
	b := benchPrefixes.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32)
}

// originConfig: n blackhole /32s, twice (one static protocol per receiver,
// both disabled at start), exported over eBGP to the calyx host and to the
// receiving BIRD. eBGP in BIRD 2 needs explicit filters (RFC 8212).
func originConfig(n int, calyxHostIP string, calyxAS int) string {
	var b strings.Builder
	b.Grow(2 * n * 40)
	fmt.Fprintf(&b, `# Written by bgpbench: originates %[1]d /32s towards one calyx host and one BIRD.
router id %[2]s;
log stderr { warning, error, fatal };

protocol device { scan time 10; }

ipv4 table t_%[3]s;
ipv4 table t_%[4]s;

template bgp bench {
	local %[2]s as %[5]d;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 10;
}

protocol bgp to_%[3]s from bench {
	neighbor %[6]s as %[7]d;
	ipv4 { table t_%[3]s; import none; export all; };
}

protocol bgp to_%[4]s from bench {
	neighbor %[8]s as %[9]d;
	ipv4 { table t_%[4]s; import none; export all; };
}
`, n, originIP, sideCalyx, sideBird, originAS, calyxHostIP, calyxAS, receiveIP, receiveAS)
	for _, side := range []string{sideCalyx, sideBird} {
		fmt.Fprintf(&b, "\nprotocol static %s {\n\tdisabled;\n\tipv4 { table t_%s; };\n", staticProtocol(side), side)
		for i := range n {
			fmt.Fprintf(&b, "\troute %s blackhole;\n", benchPrefix(i))
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// receiveConfig: one eBGP session from the originator, everything learned
// programmed into this namespace's kernel by the kernel protocol (as
// Calico's BIRD does on a node).
func receiveConfig() string {
	return fmt.Sprintf(`# Written by bgpbench: the BIRD that receives the prefixes and installs them.
router id %[1]s;
log stderr { warning, error, fatal };

protocol device { scan time 10; }

protocol kernel {
	ipv4 { import none; export all; };
}

protocol bgp from_origin {
	local %[1]s as %[2]d;
	neighbor %[3]s as %[4]d;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 10;
	ipv4 { import all; export none; };
}
`, receiveIP, receiveAS, originIP, originAS)
}
