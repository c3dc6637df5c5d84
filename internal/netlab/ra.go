package netlab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// SendRouterAdvertisement sends, from inside ns out of ifname, an ICMPv6
// router advertisement to all nodes (ff02::1) that offers itself as the
// default router for 30 minutes: what a hostile workload would send to
// become its host's router. The kernel fills in the checksum.
func SendRouterAdvertisement(ns, ifname string) error {
	return InNS(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return fmt.Errorf("raw ICMPv6 socket: %w", err)
		}
		defer unix.Close(fd)
		// Receivers ignore router advertisements whose hop limit is not 255.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index); err != nil {
			return err
		}
		// type 134, code 0, checksum (kernel), cur hop limit 64, flags 0,
		// router lifetime 1800 s, reachable time 0, retrans timer 0.
		ra := make([]byte, 16)
		ra[0], ra[4] = 134, 64
		binary.BigEndian.PutUint16(ra[6:], 1800)
		to := &unix.SockaddrInet6{ZoneId: uint32(ifi.Index), Addr: netip.MustParseAddr("ff02::1").As16()}
		return unix.Sendto(fd, ra, 0, to)
	})
}
