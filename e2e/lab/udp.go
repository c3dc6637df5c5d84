package lab

import "net"

// ListenUDP opens a UDP socket bound to addr (":80") inside target's
// namespace, for probes of UDP policy.
func (l *Lab) ListenUDP(target, addr string) (net.PacketConn, error) {
	ns, err := l.Namespace(target)
	if err != nil {
		return nil, err
	}
	return socketIn(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp", addr) })
}

// DialUDP opens a UDP socket in from's namespace connected to addr.
func (l *Lab) DialUDP(from, addr string) (net.Conn, error) {
	ns, err := l.Namespace(from)
	if err != nil {
		return nil, err
	}
	return socketIn(ns, func() (net.Conn, error) { return net.Dial("udp", addr) })
}
