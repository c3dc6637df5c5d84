//go:build linux

package bgp

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// abortSessions shuts down, both ways, this process's TCP connections that
// carry the given sessions (listenPort identifies the accepted ones). The
// peer sees the connection close with no BGP NOTIFICATION, exactly as when
// the process dies, and so starts its graceful-restart helper procedure.
// GoBGP's own file descriptors are not closed, only shut down: GoBGP then
// reads EOF, closes them itself and every write of a NOTIFICATION fails.
func abortSessions(peers []Peer, listenPort int) (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("listing file descriptors: %w", err)
	}
	n := 0
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || typ != syscall.SOCK_STREAM {
			continue
		}
		la, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		ra, err := syscall.Getpeername(fd) // fails for listeners
		if err != nil {
			continue
		}
		local, ok1 := sockaddrToAddrPort(la)
		remote, ok2 := sockaddrToAddrPort(ra)
		if !ok1 || !ok2 || !isSessionConn(peers, listenPort, local, remote) {
			continue
		}
		if syscall.Shutdown(fd, syscall.SHUT_RDWR) == nil {
			n++
		}
	}
	return n, nil
}

func sockaddrToAddrPort(sa syscall.Sockaddr) (netip.AddrPort, bool) {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), true
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)), true
	}
	return netip.AddrPort{}, false
}
