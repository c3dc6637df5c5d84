package agent

import (
	"iter"
	"net/netip"
	"slices"

	"github.com/calyx-net/calyx/bgp"
	"github.com/calyx-net/calyx/internal/pfxmap"
	"github.com/calyx-net/calyx/routes"
)

// learnedPaths are the learned best paths, prefix to next hops, packed
// (pfxmap): the 100k prefixes of one ToR share one next-hop set. The
// next-hop slices are shared and never modified.
type learnedPaths = pfxmap.Map[[]netip.Addr]

// newLearnedPaths packs m (a RIB read, or nothing).
func newLearnedPaths(m map[netip.Prefix][]netip.Addr) *learnedPaths {
	out := pfxmap.New(hopsKey, nil)
	for p, hops := range m {
		out.Set(p, hops)
	}
	return out
}

func hopsKey(dst []byte, hops []netip.Addr) []byte {
	for _, h := range hops {
		dst = pfxmap.AppendAddr(dst, h)
	}
	return dst
}

// learnedSync tracks which learned prefixes changed since their routes were
// last handed to the learned-route table. BGP delivers its changes in small
// batches (GoBGP reports one prefix per best-path event); rebuilding and
// diffing the whole learned set for each batch made a 100k-prefix transfer
// quadratic. The route of a prefix depends only on its paths (learned now
// or kept over a restart), on whether it is one of the node's own
// destinations, and on the node's own addresses, so a change to any of
// these marks just that prefix. The zero value hands over the full set
// first.
type learnedSync struct {
	dirty map[netip.Prefix]struct{}
	// own are the node's own destinations at the last handover: learned
	// routes never override them.
	own map[netip.Prefix]struct{}
	// self are the node's own addresses at the last handover: a next hop
	// that is one of them is dropped.
	self []netip.Addr
	// synced: a full set was handed over; until then, and after forget,
	// the next handover is a full one.
	synced bool
	// routes and deletes are reused from handover to handover: the table
	// copies what it is given, and only the dataplane loop hands over.
	routes  []routes.Route
	deletes []netip.Prefix
	// window, while a read of the RIB is under way (beginRIBRead), holds
	// every prefix the subscription delivered meanwhile: for those the
	// subscription is newer than the read, or as new.
	window map[netip.Prefix]struct{}
	// wake tells the dataplane loop that learned prefixes changed, apart
	// from its general kick: such a change needs none of the rest of a
	// recompute, whose cost would otherwise be paid per BGP batch.
	wake chan struct{}
}

// wakeChan returns the channel that onLearned signals (made on first use).
func (s *learnedSync) wakeChan() chan struct{} {
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
	}
	return s.wake
}

// mark notes that p's route may have changed.
func (s *learnedSync) mark(p netip.Prefix) {
	if s.dirty == nil {
		s.dirty = make(map[netip.Prefix]struct{})
	}
	s.dirty[p] = struct{}{}
}

// forget makes the next handover a full one (a fresh read of the RIB).
func (s *learnedSync) forget() { s.synced = false }

// mergeLearned folds a batch of best-path changes into paths and marks the
// prefixes whose next hops really changed.
func (s *learnedSync) mergeLearned(paths *learnedPaths, u bgp.LearnedUpdate) {
	for p, hops := range u.Routes {
		if s.window != nil {
			s.window[p] = struct{}{}
		}
		old, had := paths.Get(p)
		switch {
		case len(hops) == 0:
			if !had {
				continue
			}
			paths.Delete(p)
		case had && slices.Equal(old, hops):
			continue
		default:
			paths.Set(p, hops)
		}
		s.mark(p)
	}
}

// beginRIBRead starts recording what the subscription delivers while the
// caller reads the RIB outside the lock (Speaker.Learned).
func (s *learnedSync) beginRIBRead() { s.window = map[netip.Prefix]struct{}{} }

// endRIBRead makes rib, read since beginRIBRead, the learned paths: the
// prefixes the subscription delivered meanwhile keep the subscription's
// paths. The read comes from a watch of its own, with no order against the
// subscription's: a change delivered during the read may be missing from
// it, and the subscription, which sends changes only, would never send it
// again, leaving the route out of the kernel until the next reconcile.
// Whatever the read has that the subscription has not delivered yet is
// still on its way through the subscription. It reports whether anything
// differed.
func (s *learnedSync) endRIBRead(paths *learnedPaths, rib map[netip.Prefix][]netip.Addr) bool {
	for p := range s.window {
		if hops, ok := paths.Get(p); ok {
			rib[p] = hops
		} else {
			delete(rib, p)
		}
	}
	s.window = nil
	return s.replaceLearned(paths, rib)
}

// abortRIBRead ends a read that failed.
func (s *learnedSync) abortRIBRead() { s.window = nil }

// replaceLearned marks every prefix whose paths differ between old and
// next (a reconcile against the RIB) and reports whether any did.
func (s *learnedSync) replaceLearned(old *learnedPaths, next map[netip.Prefix][]netip.Addr) bool {
	changed := false
	for p, hops := range next {
		if o, ok := old.Get(p); !ok || !slices.Equal(o, hops) {
			s.mark(p)
			changed = true
		}
	}
	for p := range old.All() {
		if _, ok := next[p]; !ok {
			s.mark(p)
			changed = true
		}
	}
	return changed
}

// allLearned yields the learned paths and the kept ones that BGP has not
// learned again (what BGP says now wins).
func allLearned(paths *learnedPaths, kept map[netip.Prefix][]netip.Addr) iter.Seq2[netip.Prefix, []netip.Addr] {
	return func(yield func(netip.Prefix, []netip.Addr) bool) {
		for p, hops := range kept {
			if !paths.Has(p) && !yield(p, hops) {
				return
			}
		}
		for p, hops := range paths.All() {
			if !yield(p, hops) {
				return
			}
		}
	}
}

// markAll marks every prefix of m (routes kept over a restart, when they
// arrive or are swept).
func (s *learnedSync) markAll(m map[netip.Prefix][]netip.Addr) {
	for p := range m {
		s.mark(p)
	}
}

// learnedHandover is what the learned-route table is to be told: either
// the full set, or the routes to set and the destinations to delete.
type learnedHandover struct {
	full    bool
	routes  []routes.Route
	deletes []netip.Prefix
}

func (h learnedHandover) empty() bool { return !h.full && len(h.routes) == 0 && len(h.deletes) == 0 }

// handover computes what changed since the last handover: the routes of
// the marked prefixes, plus those of prefixes that became or stopped being
// the node's own. paths are the learned paths, kept the ones kept over a
// restart (paths win over kept).
func (s *learnedSync) handover(paths *learnedPaths, kept map[netip.Prefix][]netip.Addr, own []routes.Route, self []netip.Addr) learnedHandover {
	ownNow := make(map[netip.Prefix]struct{}, len(own))
	for _, r := range own {
		ownNow[r.Dst] = struct{}{}
	}
	selfNow := slices.DeleteFunc(slices.Clone(self), func(a netip.Addr) bool { return !a.IsValid() })
	if !s.synced || !slices.Equal(selfNow, s.self) {
		s.own, s.self, s.synced = ownNow, selfNow, true
		s.resetDirty()
		return learnedHandover{full: true, routes: learnedRoutes(allLearned(paths, kept), own, selfNow)}
	}
	for p := range ownNow {
		if _, was := s.own[p]; !was {
			s.mark(p)
		}
	}
	for p := range s.own {
		if _, is := ownNow[p]; !is {
			s.mark(p)
		}
	}
	s.own = ownNow
	return s.handoverMarked(paths, kept)
}

// handoverMarked computes the routes of the marked prefixes against the
// own destinations and addresses of the last handover: what a change of
// learned paths alone needs. Before the first full handover it hands over
// nothing (that one will carry everything).
func (s *learnedSync) handoverMarked(paths *learnedPaths, kept map[netip.Prefix][]netip.Addr) learnedHandover {
	var h learnedHandover
	if !s.synced || len(s.dirty) == 0 {
		return h
	}
	if cap(s.routes) > 4096 { // a burst's buffers go
		s.routes, s.deletes = nil, nil
	}
	h.routes, h.deletes = s.routes[:0], s.deletes[:0]
	for p := range s.dirty {
		hops, ok := paths.Get(p)
		if !ok {
			hops = kept[p]
		}
		if r, ok := learnedRoute(p, hops, s.own, s.self); ok {
			h.routes = append(h.routes, r)
		} else {
			h.deletes = append(h.deletes, p)
		}
	}
	s.resetDirty()
	s.routes, s.deletes = h.routes, h.deletes
	return h
}

// resetDirty empties the marks; a map that a burst grew large is dropped
// rather than cleared, since clearing keeps its memory.
func (s *learnedSync) resetDirty() {
	if len(s.dirty) > 1024 {
		s.dirty = nil
		return
	}
	clear(s.dirty)
}

// apply hands h to the table.
func (h learnedHandover) apply(t *routes.Table) error {
	if h.full {
		return t.SetRoutes(h.routes)
	}
	return t.UpdateRoutes(h.routes, h.deletes)
}
