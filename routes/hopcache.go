package routes

import (
	"net/netip"
	"sync"
)

// hopCache shares the next-hop slices of single-gateway routes. A large
// table (100k routes learned over BGP) goes through a handful of gateways;
// a slice per route in the desired set and another in the kernel view
// would be 200k small objects for the garbage collector to trace. Shared
// slices are never modified: desired routes are copied on the way out
// (Routes) and a kernel route's hops are replaced, never edited.
type hopCache struct {
	mu    sync.Mutex
	addrs map[netip.Addr][]netip.Addr
	hops  map[nextHop][]nextHop
}

// maxCachedHops bounds each map; past it, it starts again.
const maxCachedHops = 1024

// route returns r with NextHops owned by the table: shared when it has one
// next hop, copied otherwise.
func (c *hopCache) route(r Route) Route {
	if len(r.NextHops) != 1 {
		return r.clone()
	}
	h := r.NextHops[0]
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.addrs[h]
	if !ok {
		if c.addrs == nil || len(c.addrs) >= maxCachedHops {
			c.addrs = make(map[netip.Addr][]netip.Addr)
		}
		s = []netip.Addr{h}
		c.addrs[h] = s
	}
	r.NextHops = s
	return r
}

// kernel returns k with a shared hops slice when it has one hop.
func (c *hopCache) kernel(k kroute) kroute {
	if len(k.hops) != 1 {
		return k
	}
	h := k.hops[0]
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.hops[h]
	if !ok {
		if c.hops == nil || len(c.hops) >= maxCachedHops {
			c.hops = make(map[nextHop][]nextHop)
		}
		s = []nextHop{h}
		c.hops[h] = s
	}
	k.hops = s
	return k
}
