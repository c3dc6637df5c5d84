// Package pfxmap is a map from IP prefixes to values, packed for route
// tables of 100k entries and more (the prefixes a BGP peer sends).
//
// A map[netip.Prefix]V costs a 32-byte key and the whole value per entry,
// and a large route table repeats a handful of values: 100k routes learned
// from one peer all go through the same gateway. Here IPv4 prefixes are
// keyed by 8 bytes, and values are interned: each distinct value is stored
// once, and an entry holds a 4-byte reference to it (counted, so that a
// value no entry uses any more is dropped). A 100k-route table takes about
// 2 MB instead of 10 to 17.
package pfxmap

import (
	"iter"
	"net/netip"
)

// Map maps prefixes to values of V. Values are shared between the entries
// that hold equal ones: what Get and All return must not be modified (a
// slice in V must be treated as read-only). The zero Map is not usable;
// make one with New. Not safe for concurrent use.
type Map[V any] struct {
	v4 map[uint64]uint32
	v6 map[netip.Prefix]uint32
	in interner[V]
}

// New returns an empty map. key appends an encoding of v to dst: equal
// encodings mean equal values (the ones that are shared). own, if not nil,
// returns a copy of v for keeping: Set may be handed a value built in a
// scratch buffer, and only a value that is new is copied.
func New[V any](key func(dst []byte, v V) []byte, own func(V) V) *Map[V] {
	return &Map[V]{
		v4: make(map[uint64]uint32),
		v6: make(map[netip.Prefix]uint32),
		in: interner[V]{key: key, own: own, ids: make(map[string]uint32)},
	}
}

// key4 packs an IPv4 prefix: the address and the length.
func key4(p netip.Prefix) uint64 {
	a := p.Addr().As4()
	return uint64(a[0])<<32 | uint64(a[1])<<24 | uint64(a[2])<<16 | uint64(a[3])<<8 | uint64(p.Bits())
}

func prefix4(k uint64) netip.Prefix {
	a := netip.AddrFrom4([4]byte{byte(k >> 32), byte(k >> 24), byte(k >> 16), byte(k >> 8)})
	return netip.PrefixFrom(a, int(k&0xff))
}

// Get returns p's value.
func (m *Map[V]) Get(p netip.Prefix) (V, bool) {
	id, ok := m.id(p)
	if !ok {
		var zero V
		return zero, false
	}
	return m.in.vals[id], true
}

// Has reports whether p has a value.
func (m *Map[V]) Has(p netip.Prefix) bool {
	_, ok := m.id(p)
	return ok
}

func (m *Map[V]) id(p netip.Prefix) (uint32, bool) {
	if p.Addr().Is4() {
		id, ok := m.v4[key4(p)]
		return id, ok
	}
	id, ok := m.v6[p]
	return id, ok
}

// Set gives p the value v. p must be a valid prefix; an IPv4-mapped IPv6
// address counts as IPv6.
func (m *Map[V]) Set(p netip.Prefix, v V) {
	id := m.in.ref(v)
	var old uint32
	var had bool
	if p.Addr().Is4() {
		k := key4(p)
		old, had = m.v4[k]
		m.v4[k] = id
	} else {
		old, had = m.v6[p]
		m.v6[p] = id
	}
	if had {
		m.in.unref(old)
	}
}

// Delete removes p and reports whether it was there.
func (m *Map[V]) Delete(p netip.Prefix) bool {
	var id uint32
	var had bool
	if p.Addr().Is4() {
		k := key4(p)
		if id, had = m.v4[k]; had {
			delete(m.v4, k)
		}
	} else if id, had = m.v6[p]; had {
		delete(m.v6, p)
	}
	if had {
		m.in.unref(id)
	}
	return had
}

// Len is the number of prefixes.
func (m *Map[V]) Len() int { return len(m.v4) + len(m.v6) }

// All yields every prefix with its value, in no particular order. The map
// may be changed during the iteration (as a Go map may).
func (m *Map[V]) All() iter.Seq2[netip.Prefix, V] {
	return func(yield func(netip.Prefix, V) bool) {
		for k, id := range m.v4 {
			if !yield(prefix4(k), m.in.vals[id]) {
				return
			}
		}
		for p, id := range m.v6 {
			if !yield(p, m.in.vals[id]) {
				return
			}
		}
	}
}

// Clear removes everything and gives the memory back (a cleared Go map
// keeps its size).
func (m *Map[V]) Clear() {
	m.v4 = make(map[uint64]uint32)
	m.v6 = make(map[netip.Prefix]uint32)
	m.in = interner[V]{key: m.in.key, own: m.in.own, ids: make(map[string]uint32)}
}

// Values is the number of distinct values held (for tests and sizing).
func (m *Map[V]) Values() int { return len(m.in.ids) }

// interner stores each distinct value once, with a count of the entries
// that refer to it.
type interner[V any] struct {
	key  func([]byte, V) []byte
	own  func(V) V
	ids  map[string]uint32
	vals []V
	refs []uint32
	free []uint32
	buf  []byte
}

func (in *interner[V]) ref(v V) uint32 {
	in.buf = in.key(in.buf[:0], v)
	if id, ok := in.ids[string(in.buf)]; ok {
		in.refs[id]++
		return id
	}
	if in.own != nil {
		v = in.own(v)
	}
	var id uint32
	if n := len(in.free); n > 0 {
		id = in.free[n-1]
		in.free = in.free[:n-1]
		in.vals[id], in.refs[id] = v, 1
	} else {
		id = uint32(len(in.vals))
		in.vals, in.refs = append(in.vals, v), append(in.refs, 1)
	}
	in.ids[string(in.buf)] = id
	return id
}

func (in *interner[V]) unref(id uint32) {
	if in.refs[id]--; in.refs[id] > 0 {
		return
	}
	in.buf = in.key(in.buf[:0], in.vals[id])
	delete(in.ids, string(in.buf))
	var zero V
	in.vals[id] = zero
	in.free = append(in.free, id)
}

// AppendAddr appends an address's encoding for a key function: its 16
// bytes and a byte that tells IPv4 from IPv6 and the invalid address.
func AppendAddr(dst []byte, a netip.Addr) []byte {
	b := a.As16()
	kind := byte(0)
	switch {
	case a.Is4():
		kind = 4
	case a.Is6():
		kind = 6
	}
	return append(append(dst, b[:]...), kind)
}
