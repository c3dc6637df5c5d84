package lab

import "net"

// ListenUDP opens a UDP socket bound to addr (":80") inside target's
// namespace, for probes of UDP policy.
func (l *Lab) ListenUDP(target, addr string) (net.PacketConn, error) {
	ns, err := l.Namespace(target)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err = inNamespace(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	})
	return pc, err
}

// DialUDP opens a UDP socket in from's namespace connected to addr.
func (l *Lab) DialUDP(from, addr string) (net.Conn, error) {
	ns, err := l.Namespace(from)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	err = inNamespace(ns, func() error {
		var err error
		c, err = net.Dial("udp", addr)
		return err
	})
	return c, err
}
