package netlab

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/calyx-net/calyx/routes/netns"
)

// InNS runs fn inside the lab namespace called ns (routes/netns.Do: a
// thread of its own). Sockets fn creates stay in that namespace after it
// returns, so a listener can be served from any goroutine.
func InNS(ns string, fn func() error) error {
	return netns.Do("/run/netns/"+ns, fn)
}

// ServeTCP listens on addr inside ns and answers every connection with
// "ok <client address>\n" (so a test sees NAT). The listener closes when
// ctx ends.
func ServeTCP(ctx context.Context, ns string, addr netip.AddrPort) error {
	var ln net.Listener
	err := InNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok " + c.RemoteAddr().String() + "\n"))
			c.Close()
		}
	}()
	return nil
}

// DialTCP connects from inside ns and returns the server's greeting; no
// error means the connection went through both ways.
func DialTCP(ns string, to netip.AddrPort, timeout time.Duration) (string, error) {
	var greeting string
	err := InNS(ns, func() error {
		c, err := net.DialTimeout("tcp", to.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("reading greeting: %w", err)
		}
		greeting = strings.TrimSpace(line)
		return nil
	})
	return greeting, err
}

// Ping sends one ICMP (ICMPv6) echo request from src (which must be an
// address in ns, any one when invalid) to dst and waits for the reply.
func Ping(ns string, src, dst netip.Addr, timeout time.Duration) error {
	network, typ, replyType := "ip4:icmp", byte(8), byte(0)
	if dst.Is6() {
		network, typ, replyType = "ip6:ipv6-icmp", 128, 129
	}
	local := ""
	if src.IsValid() {
		local = src.String()
	}
	var conn net.PacketConn
	if err := InNS(ns, func() error {
		var err error
		conn, err = net.ListenPacket(network, local)
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	id := uint16(time.Now().UnixNano())
	msg := []byte{typ, 0, 0, 0, 0, 0, 0, 1, 'c', 'x', 'p', 'i', 'n', 'g'}
	binary.BigEndian.PutUint16(msg[4:], id)
	if !dst.Is6() { // the kernel fills in ICMPv6 checksums
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	if _, err := conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("sending echo: %w", err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for {
		_ = conn.SetReadDeadline(deadline)
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply from %s: %w", dst, err)
		}
		fa, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if n >= 8 && buf[0] == replyType && binary.BigEndian.Uint16(buf[4:]) == id && fa.Unmap() == dst {
			return nil
		}
	}
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
