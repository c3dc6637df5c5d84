package routes

// The encoder and parser of route messages, without a kernel: what one
// writes the other reads back, whatever the shape; the parser never
// panics on any input and is a fixed point after one normalization. (That
// the kernel agrees is TestWriterEncodesEveryShape and
// TestParseRouteMsgMatchesNetlink, as root.)

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	gw4a, gw4b = netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.1.3")
	gw6a, gw6b = netip.MustParseAddr("fd00:18::2"), netip.MustParseAddr("fd00:18::3")
)

// shapes are kernel routes of every shape the table writes.
var shapes = []struct {
	dst string
	k   kroute
}{
	{"10.244.0.1/32", kroute{typ: unix.RTN_UNICAST, scope: netlink.SCOPE_LINK, linkIndex: 7}},
	{"10.244.1.0/26", kroute{typ: unix.RTN_BLACKHOLE}},
	{"10.3.0.0/24", kroute{typ: unix.RTN_UNICAST, src: netip.MustParseAddr("198.18.1.1"), hops: []nextHop{{gw: gw4a}}}},
	{"10.4.0.0/24", kroute{typ: unix.RTN_UNICAST, hops: []nextHop{{gw: gw4a, linkIndex: 3}, {gw: gw4b, linkIndex: 4}}}},
	{"10.5.0.0/24", kroute{typ: unix.RTN_UNICAST, onlink: true, hops: []nextHop{{gw: netip.MustParseAddr("10.99.0.1"), linkIndex: 3}}}},
	{"0.0.0.0/0", kroute{typ: unix.RTN_UNICAST, hops: []nextHop{{gw: gw4a, linkIndex: 2}}}},
	{"fd00:244::1/128", kroute{typ: unix.RTN_UNICAST, linkIndex: 7}},
	{"fd00:2::/64", kroute{typ: unix.RTN_BLACKHOLE}},
	{"fd00:4::/64", kroute{typ: unix.RTN_UNICAST, hops: []nextHop{{gw: gw6a, linkIndex: 3}, {gw: gw6b, linkIndex: 3}}}},
	{"::/0", kroute{typ: unix.RTN_UNICAST, hops: []nextHop{{gw: gw6a}}}},
	{"::ffff:0:0/96", kroute{typ: unix.RTN_UNICAST, linkIndex: 2}},
}

// parseOne splits one message into its header fields and route.
func parseOne(t *testing.T, b []byte) (typ, flags uint16, seq uint32, h routeHeader, p netip.Prefix, k kroute) {
	t.Helper()
	if int(ne.Uint32(b)) != len(b) {
		t.Fatalf("message length %d, buffer %d", ne.Uint32(b), len(b))
	}
	typ, flags, seq = ne.Uint16(b[4:]), ne.Uint16(b[6:]), ne.Uint32(b[8:])
	var ok bool
	if h, ok = parseRouteHeader(b[nlmsgHdrLen:]); !ok {
		t.Fatal("header not parsed")
	}
	if p, k, ok = parseRouteMsg(b[nlmsgHdrLen:]); !ok {
		t.Fatal("route not parsed")
	}
	return
}

func TestRouteMsgRoundTrip(t *testing.T) {
	for _, table := range []int{unix.RT_TABLE_MAIN, 1000} {
		for _, s := range shapes {
			dst := netip.MustParsePrefix(s.dst)
			for _, op := range []WriteOp{OpAdd, OpReplace, OpDelete} {
				k := s.k
				if op == OpDelete {
					k.priority = 77
				}
				b := appendRouteMsg(nil, op, 42, dst, k, table, ProtoBGP)
				typ, flags, seq, h, p, got := parseOne(t, b)
				// RTM_NEWROUTE 24 / RTM_DELROUTE 25; REQUEST|ACK, +CREATE|EXCL
				// for an add, +CREATE|REPLACE for a replace.
				wantHdr := map[WriteOp][2]uint16{OpAdd: {24, 0x605}, OpReplace: {24, 0x505}, OpDelete: {25, 0x005}}[op]
				wantTyp, wantFlags := wantHdr[0], wantHdr[1]
				if typ != wantTyp || flags != wantFlags || seq != 42 {
					t.Errorf("%s %s: type %d flags %#x seq %d", op, s.dst, typ, flags, seq)
				}
				if h.table != table || h.protocol != ProtoBGP || h.family != familyOf(dst) || p != dst {
					t.Errorf("%s %s: header %+v, dst %s", op, s.dst, h, p)
				}
				want := s.k
				want.onlink = false // carried in flags, not read back (forwarding does not depend on it)
				if op == OpDelete {
					// A delete names the route by type and metric only.
					want = kroute{typ: s.k.typ, priority: 77, scope: netlink.Scope(unix.RT_SCOPE_NOWHERE)}
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s %s in table %d: read back %+v, wrote %+v", op, s.dst, table, got, want)
				}
			}
		}
	}
}

// recordSink collects events.
type recordSink struct {
	routes []netip.Prefix
	polls  int
}

func (r *recordSink) routeEvent(p netip.Prefix, _ kroute, _ bool) { r.routes = append(r.routes, p) }
func (r *recordSink) linkEvent(int, string, bool, bool)           {}
func (r *recordSink) eventsQueued()                               { r.polls++ }

// The event reader hands on only the routes of its protocol, table and
// families, from a datagram holding many messages of all kinds.
func TestDecodeRouteEventsSelects(t *testing.T) {
	var b []byte
	add := func(op WriteOp, dst string, table, proto int) {
		b = appendRouteMsg(b, op, 1, netip.MustParsePrefix(dst), kroute{typ: unix.RTN_BLACKHOLE}, table, proto)
	}
	add(OpAdd, "10.1.0.0/24", unix.RT_TABLE_MAIN, ProtoBGP)      // ours
	add(OpAdd, "10.2.0.0/24", unix.RT_TABLE_MAIN, ProtoWorkload) // another protocol
	add(OpAdd, "10.3.0.0/24", 1000, ProtoBGP)                    // another table
	add(OpAdd, "fd00:1::/64", unix.RT_TABLE_MAIN, ProtoBGP)      // another family
	b = append(b, make([]byte, nlmsgHdrLen)...)                  // a zero-length message ends the datagram
	ne.PutUint32(b[len(b)-nlmsgHdrLen:], nlmsgHdrLen)
	ne.PutUint16(b[len(b)-nlmsgHdrLen+4:], unix.NLMSG_DONE)
	add(OpDelete, "10.4.0.0/24", unix.RT_TABLE_MAIN, ProtoBGP) // ours
	var sink recordSink
	sel := eventSelector{protocol: ProtoBGP, table: unix.RT_TABLE_MAIN, family: FamilyV4}
	if !decodeRouteEvents(b, sel, &sink) {
		t.Fatal("no event of ours seen")
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.4.0.0/24")}
	if !reflect.DeepEqual(sink.routes, want) {
		t.Fatalf("events %v, want %v", sink.routes, want)
	}
	if decodeRouteEvents(b, eventSelector{protocol: 99, table: unix.RT_TABLE_MAIN}, &sink) {
		t.Fatal("events of another protocol reported")
	}
}

// FuzzParseRouteMsg: any bytes parse without a panic; what parses,
// written again and parsed again, is stable.
func FuzzParseRouteMsg(f *testing.F) {
	for _, s := range shapes {
		b := appendRouteMsg(nil, OpReplace, 1, netip.MustParsePrefix(s.dst), s.k, 1000, ProtoBGP)
		f.Add(b[nlmsgHdrLen:])
	}
	f.Add([]byte{2, 32, 0, 0, 254, 202, 0, 1, 0, 0, 0, 0, 3, 0, 1})
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = parseRouteHeader(body)
		decodeRouteEvents(body, eventSelector{protocol: ProtoBGP, table: unix.RT_TABLE_MAIN, family: FamilyBoth}, &recordSink{})
		p, k, ok := parseRouteMsg(body)
		if !ok {
			return
		}
		again := func(p netip.Prefix, k kroute) (netip.Prefix, kroute) {
			b := appendRouteMsg(nil, OpReplace, 1, p, k, 1000, ProtoBGP)
			if int(ne.Uint32(b)) != len(b) {
				t.Fatalf("encoded length %d, buffer %d", ne.Uint32(b), len(b))
			}
			p2, k2, ok := parseRouteMsg(b[nlmsgHdrLen:])
			if !ok {
				t.Fatalf("re-encoded %s %+v does not parse", p, k)
			}
			return p2, k2
		}
		p1, k1 := again(p, k)
		p2, k2 := again(p1, k1)
		if p1 != p2 || !reflect.DeepEqual(k1, k2) {
			t.Fatalf("not stable: %s %+v, then %s %+v", p1, k1, p2, k2)
		}
	})
}

// FuzzRouteMsgRoundTrip builds a valid route from the fuzzer's numbers:
// the parser reads back exactly what the encoder wrote.
func FuzzRouteMsgRoundTrip(f *testing.F) {
	f.Add(true, uint32(0x0af40001), uint8(32), uint8(0), uint32(0), uint32(0), int32(7), false)
	f.Add(false, uint32(0xfd000001), uint8(64), uint8(2), uint32(0xc6120102), uint32(0xc6120103), int32(3), true)
	f.Fuzz(func(t *testing.T, v4 bool, addr uint32, bits, shape uint8, gwA, gwB uint32, link int32, blackhole bool) {
		mk := func(x uint32) netip.Addr {
			if v4 {
				return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
			}
			var a [16]byte
			a[0], a[1] = 0xfd, 0
			ne.PutUint32(a[12:], x)
			return netip.AddrFrom16(a)
		}
		dst, err := mk(addr).Prefix(int(bits) % (mk(addr).BitLen() + 1))
		if err != nil {
			t.Skip()
		}
		li := int(link & 0x7fffffff) // interface indexes are positive; 0 is "any" for a hop
		k := kroute{typ: unix.RTN_UNICAST}
		switch {
		case blackhole:
			k.typ = unix.RTN_BLACKHOLE
		case shape%3 == 0:
			k.linkIndex, k.scope = max(li, 1), netlink.SCOPE_LINK
		case shape%3 == 1:
			k.hops = []nextHop{{gw: mk(gwA), linkIndex: li}}
		default:
			k.hops = []nextHop{{gw: mk(gwA), linkIndex: li}, {gw: mk(gwB), linkIndex: li / 2}}
			sortHops(k.hops)
		}
		b := appendRouteMsg(nil, OpReplace, 9, dst, k, 254, ProtoWorkload)
		p, got, ok := parseRouteMsg(b[nlmsgHdrLen:])
		if !ok || p != dst {
			t.Fatalf("wrote %s, read %s (ok %v)", dst, p, ok)
		}
		if !reflect.DeepEqual(got, k) {
			t.Fatalf("%s: wrote %+v, read %+v", dst, k, got)
		}
	})
}
