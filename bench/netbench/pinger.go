package netbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/routes/netns"
)

// pinger sends ICMP echo requests from a raw socket made inside one
// namespace. It replaces `ip netns exec ... ping`, whose few milliseconds
// of process start would swamp what the first-ping figure measures. The
// socket is made on a thread inside the namespace (routes/netns.Do): a
// socket stays in the namespace it was created in.
type pinger struct {
	netns string
	conn  *net.IPConn
	buf   []byte
}

func openPinger(name string) (*pinger, error) {
	var c net.PacketConn
	err := netns.Do(benchkit.NetnsPath(name), func() error {
		var err error
		c, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ICMP socket in %s: %w", name, err)
	}
	return &pinger{netns: name, conn: c.(*net.IPConn), buf: make([]byte, 1500)}, nil
}

func (p *pinger) Close() error { return p.conn.Close() }

// firstReply sends an echo request to dst every interval until a reply
// with this id comes back from dst, and returns when it arrived and how
// many requests went out. It gives up after timeout.
func (p *pinger) firstReply(ctx context.Context, dst netip.Addr, id uint16, interval, timeout time.Duration) (time.Time, int, error) {
	to := &net.IPAddr{IP: dst.AsSlice()}
	deadline := time.Now().Add(timeout)
	sent := 0
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return time.Time{}, sent, err
		}
		if _, err := p.conn.WriteTo(echoRequest(id, uint16(sent)), to); err != nil {
			// No route yet is one of the states being waited out.
			if !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
				return time.Time{}, sent, fmt.Errorf("ICMP echo from %s to %s: %w", p.netns, dst, err)
			}
		}
		sent++
		next := time.Now().Add(interval)
		for {
			if at, ok, err := p.readUntil(next, dst, id); err != nil {
				return time.Time{}, sent, err
			} else if ok {
				return at, sent, nil
			}
			if !time.Now().Before(next) {
				break
			}
		}
	}
	return time.Time{}, sent, fmt.Errorf("no echo reply from %s to %s within %s (%d requests)", dst, p.netns, timeout, sent)
}

// readUntil reads one packet, waiting at most until t; ok means it was the
// echo reply wanted.
func (p *pinger) readUntil(t time.Time, from netip.Addr, id uint16) (time.Time, bool, error) {
	if err := p.conn.SetReadDeadline(t); err != nil {
		return time.Time{}, false, err
	}
	n, src, err := p.conn.ReadFrom(p.buf)
	at := time.Now()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("reading ICMP in %s: %w", p.netns, err)
	}
	ip, ok := src.(*net.IPAddr)
	if !ok || n < 8 {
		return time.Time{}, false, nil
	}
	a, _ := netip.AddrFromSlice(ip.IP)
	b := p.buf[:n]
	// Type 0 is an echo reply; the id tells this trial's from others'.
	if b[0] != 0 || binary.BigEndian.Uint16(b[4:6]) != id || a.Unmap() != from {
		return time.Time{}, false, nil
	}
	return at, true, nil
}

// rtt is one echo's round trip.
func (p *pinger) rtt(ctx context.Context, dst netip.Addr, id uint16) (time.Duration, error) {
	start := time.Now()
	at, _, err := p.firstReply(ctx, dst, id, time.Second, time.Second)
	if err != nil {
		return 0, err
	}
	return at.Sub(start), nil
}

// echoRequest builds an ICMP echo request (type 8) with a checksum.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "calyxnb!")
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
