// Package veth does the kernel side of a CNI ADD, DEL and CHECK for a
// Calyx workload: a veth pair with the workload end inside the workload's
// network namespace, its addresses and default routes, and the host end
// with proxy-ARP. The /32 (/128) host route toward the workload is not
// added here: the agent hands it to a routes.Table (ProtoWorkload), whose
// ApplyRoute writes it at once.
package veth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/calyx-net/calyx/routes"
)

var (
	// HostMAC is the MAC of every host-side interface: workloads always
	// see the same gateway MAC, wherever they run.
	HostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	// GatewayV4 is the workload's IPv4 next hop, answered by proxy-ARP.
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	// GatewayV6 is the workload's IPv6 next hop, an address of the host end.
	GatewayV6 = netip.MustParseAddr("fe80::1")
)

const (
	// DefaultContainerIfName is the workload-side name when none is given.
	DefaultContainerIfName = "eth0"
	// DefaultMTU is used when the spec leaves MTU at zero.
	DefaultMTU   = 1500
	maxIfNameLen = 15
)

// HostInterfaceName derives the host-side interface name of an endpoint:
// "cx" and the first 11 hex digits of the SHA-256 of its id (15 bytes, the
// kernel's limit).
func HostInterfaceName(endpointID string) string {
	sum := sha256.Sum256([]byte(endpointID))
	return routes.WorkloadIfacePrefix + hex.EncodeToString(sum[:])[:11]
}

// Spec describes one workload's plumbing.
type Spec struct {
	// NetNSPath is the workload's network namespace (CNI_NETNS).
	NetNSPath string
	// ContainerIfName is the workload-side name (CNI_IFNAME); default eth0.
	ContainerIfName string
	// HostIfName is the host-side name, normally HostInterfaceName(id).
	HostIfName string
	// Addresses are the workload's addresses, each a /32 or /128.
	Addresses []netip.Prefix
	// MTU of both ends; 0 means DefaultMTU.
	MTU int
	// ContainerMAC, if set, is the workload end's MAC (see ContainerMAC);
	// otherwise the kernel picks a random one.
	ContainerMAC net.HardwareAddr
}

// ContainerMAC derives a stable, locally administered unicast MAC for a
// workload end from its endpoint id, so that the agent knows it before the
// veth exists and a rebuilt veth keeps it.
func ContainerMAC(endpointID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("mac/" + endpointID))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

// Result is what a CNI result needs from Setup.
type Result struct {
	ContainerIfName string
	ContainerMAC    net.HardwareAddr
	ContainerIndex  int
	SandboxPath     string
	HostIfName      string
	HostMAC         net.HardwareAddr
	HostIndex       int
}

func (s Spec) hasV4() bool {
	for _, a := range s.Addresses {
		if a.Addr().Is4() {
			return true
		}
	}
	return false
}

func (s Spec) hasV6() bool {
	for _, a := range s.Addresses {
		if a.Addr().Is6() {
			return true
		}
	}
	return false
}

// normalized fills defaults and validates, naming the first problem.
func (s Spec) normalized() (Spec, error) {
	s, err := s.normalizedNames()
	if err != nil {
		return s, err
	}
	if len(s.Addresses) == 0 {
		return s, errors.New("no workload addresses given")
	}
	seen := make(map[netip.Addr]bool)
	for _, p := range s.Addresses {
		if err := validAddress(p); err != nil {
			return s, err
		}
		if seen[p.Addr()] {
			return s, fmt.Errorf("address %s listed twice", p.Addr())
		}
		seen[p.Addr()] = true
	}
	if s.hasV6() && s.MTU < minMTUv6 {
		return s, fmt.Errorf("MTU %d out of range %d-65535", s.MTU, minMTUv6)
	}
	return s, nil
}

// Minimum MTUs: IPv4's, and IPv6's (RFC 8200).
const minMTUv4, minMTUv6 = 68, 1280

// normalizedNames is normalized without the addresses: what Create needs.
func (s Spec) normalizedNames() (Spec, error) {
	if s.ContainerIfName == "" {
		s.ContainerIfName = DefaultContainerIfName
	}
	if s.MTU == 0 {
		s.MTU = DefaultMTU
	}
	if s.NetNSPath == "" {
		return s, errors.New("workload network namespace path is empty")
	}
	if err := validIfName("container interface", s.ContainerIfName); err != nil {
		return s, err
	}
	if s.HostIfName == "" {
		return s, errors.New("host interface name is empty")
	}
	if err := validIfName("host interface", s.HostIfName); err != nil {
		return s, err
	}
	if s.MTU < minMTUv4 || s.MTU > 65535 {
		return s, fmt.Errorf("MTU %d out of range %d-65535", s.MTU, minMTUv4)
	}
	return s, nil
}

func validIfName(what, name string) error {
	switch {
	case len(name) > maxIfNameLen:
		return fmt.Errorf("%s name %q is %d characters, the kernel allows at most %d", what, name, len(name), maxIfNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%s name %q is not allowed", what, name)
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("%s name %q contains '/', ':' or whitespace", what, name)
	}
	return nil
}

func validAddress(p netip.Prefix) error {
	a := p.Addr()
	switch {
	case !p.IsValid():
		return errors.New("invalid workload address")
	case a.Is4In6():
		return fmt.Errorf("address %s is an IPv4-mapped IPv6 address: give the IPv4 address", p)
	case a.Is4() && p.Bits() != 32:
		return fmt.Errorf("address %s: IPv4 workload addresses must be /32", p)
	case a.Is6() && p.Bits() != 128:
		return fmt.Errorf("address %s: IPv6 workload addresses must be /128", p)
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast():
		return fmt.Errorf("address %s cannot be a workload address", p)
	}
	return nil
}
