package bgp

import "net/netip"

// isSessionConn reports whether a TCP connection (local, remote) belongs to
// one of the sessions: the remote address is the peer's, the local address
// the session's source when one is set, and either the remote port is the
// peer's (we dialled) or the local port is ours (we accepted).
func isSessionConn(peers []Peer, listenPort int, local, remote netip.AddrPort) bool {
	for i := range peers {
		p := &peers[i]
		if remote.Addr() != p.Address {
			continue
		}
		if p.LocalAddress.IsValid() && local.Addr() != p.LocalAddress {
			continue
		}
		if int(remote.Port()) == p.port() || int(local.Port()) == listenPort {
			return true
		}
	}
	return false
}
