package pfxmap

import (
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"testing"
)

func hopsKey(dst []byte, hs []netip.Addr) []byte {
	for _, h := range hs {
		dst = AppendAddr(dst, h)
	}
	return dst
}

func newHops() *Map[[]netip.Addr] { return New(hopsKey, slices.Clone[[]netip.Addr]) }

var (
	gw1 = netip.MustParseAddr("198.18.0.1")
	gw2 = netip.MustParseAddr("198.18.0.2")
	gw6 = netip.MustParseAddr("fd00::1")
)

// The map behaves as a Go map of the same prefixes, whatever the order of
// sets and deletes, IPv4, IPv6 and IPv4-mapped prefixes alike.
func TestMapMatchesGoMap(t *testing.T) {
	m := newHops()
	want := map[netip.Prefix][]netip.Addr{}
	ps := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/9"), netip.MustParsePrefix("10.0.0.1/32"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("255.255.255.255/32"),
		netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("::ffff:10.0.0.0/104"), netip.MustParsePrefix("::/0"),
	}
	sets := [][]netip.Addr{{gw1}, {gw2}, {gw1, gw2}, {gw6}}
	for i := range 200 {
		p, hs := ps[(i*7)%len(ps)], sets[(i*3)%len(sets)]
		if i%5 == 4 {
			if m.Delete(p) != (want[p] != nil) {
				t.Fatalf("step %d: Delete(%s) reported wrongly", i, p)
			}
			delete(want, p)
		} else {
			m.Set(p, hs)
			want[p] = hs
		}
		got := maps.Collect(m.All())
		if !maps.EqualFunc(got, want, slices.Equal) || m.Len() != len(want) {
			t.Fatalf("step %d: map %v, want %v", i, got, want)
		}
		for _, q := range ps {
			v, ok := m.Get(q)
			if ok != (want[q] != nil) || !slices.Equal(v, want[q]) || m.Has(q) != ok {
				t.Fatalf("step %d: Get(%s) = %v, %v; want %v", i, q, v, ok, want[q])
			}
		}
	}
}

// Equal values are stored once, and a value no prefix refers to any more
// is dropped; Set copies what it keeps (the caller may reuse its buffer).
func TestMapInternsValues(t *testing.T) {
	m := newHops()
	buf := []netip.Addr{gw1}
	for i := range 1000 {
		m.Set(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32), buf)
	}
	buf[0] = gw2 // the caller's buffer, reused
	if v, _ := m.Get(netip.MustParsePrefix("10.0.0.7/32")); !slices.Equal(v, []netip.Addr{gw1}) {
		t.Fatalf("value changed with the caller's buffer: %v", v)
	}
	if n := m.Values(); n != 1 {
		t.Fatalf("%d distinct values held for 1000 equal ones", n)
	}
	m.Set(netip.MustParsePrefix("10.0.0.7/32"), []netip.Addr{gw2})
	if n := m.Values(); n != 2 {
		t.Fatalf("%d distinct values, want 2", n)
	}
	m.Delete(netip.MustParsePrefix("10.0.0.7/32"))
	if n := m.Values(); n != 1 {
		t.Fatalf("%d distinct values after the only gw2 prefix went, want 1", n)
	}
	for i := range 1000 {
		m.Delete(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32))
	}
	if m.Len() != 0 || m.Values() != 0 {
		t.Fatalf("emptied map: %d prefixes, %d values", m.Len(), m.Values())
	}
	m.Set(netip.MustParsePrefix("10.1.0.0/16"), []netip.Addr{gw2}) // a freed slot is reused
	if v, ok := m.Get(netip.MustParsePrefix("10.1.0.0/16")); !ok || !slices.Equal(v, []netip.Addr{gw2}) {
		t.Fatalf("after reuse: %v, %v", v, ok)
	}
}

// The point of the package: 100k /32s through one gateway in a fraction
// of a Go map's memory.
func TestMapMemory(t *testing.T) {
	const n = 100_000
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	hop := []netip.Addr{gw1}
	base := heap()
	plain := make(map[netip.Prefix][]netip.Addr)
	for i := range n {
		plain[netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)] = hop
	}
	plainBytes := heap() - base
	runtime.KeepAlive(plain)
	plain = nil
	base = heap()
	m := newHops()
	for i := range n {
		m.Set(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), hop)
	}
	packed := heap() - base
	runtime.KeepAlive(m)
	t.Logf("100k prefixes: Go map %.1f MB, packed %.1f MB", float64(plainBytes)/1e6, float64(packed)/1e6)
	if packed*3 > plainBytes {
		t.Errorf("packed map takes %d bytes, more than a third of the Go map's %d", packed, plainBytes)
	}
}

func ExampleMap() {
	m := New(func(dst []byte, v string) []byte { return append(dst, v...) }, nil)
	m.Set(netip.MustParsePrefix("10.0.0.0/24"), "via 198.18.0.1")
	m.Set(netip.MustParsePrefix("10.0.1.0/24"), "via 198.18.0.1")
	v, ok := m.Get(netip.MustParsePrefix("10.0.1.0/24"))
	fmt.Println(v, ok, m.Len(), m.Values())
	// Output: via 198.18.0.1 true 2 1
}
