package routes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLinkPending says a device route could not be written because its
// interface does not exist or is down; the table keeps it and writes it as
// soon as the interface is up (when Run is watching link events).
var ErrLinkPending = errors.New("interface missing or down, route kept pending")

// Apply makes the kernel's routes of the table's protocol equal to the
// desired set, writing only the differences: missing routes are added,
// differing ones replaced, stale ones deleted. It keeps going after a
// failed write and returns all failures joined; failed routes are retried
// by the next Apply. A device route whose interface is missing or down is
// pending, not an error.
//
// The first Apply marks the table in sync: only from then on does Run
// write on its own, so the owner decides when writing starts (after its
// datastore is in sync, so a restarted agent does not flap routes).
func (t *Table) Apply(ctx context.Context) error {
	t.mu.Lock()
	t.inSync = true
	t.mu.Unlock()
	_, err := t.apply(ctx, nil)
	return err
}

// ApplyPrefixes writes the desired state of the given destinations only
// (their route, or its deletion) without a full pass: the fast path for a
// new workload that must be reachable at once. It does not mark the table
// in sync.
func (t *Table) ApplyPrefixes(ctx context.Context, dsts ...netip.Prefix) error {
	if len(dsts) == 0 {
		return nil
	}
	_, err := t.apply(ctx, dsts)
	return err
}

// ApplyRoute sets r and writes it at once (see ApplyPrefixes). It returns
// an error wrapping ErrLinkPending when r's interface is missing or down.
func (t *Table) ApplyRoute(ctx context.Context, r Route) error {
	if err := t.SetRoute(r); err != nil {
		return err
	}
	pending, err := t.apply(ctx, []netip.Prefix{r.Dst})
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		return fmt.Errorf("route %s via %q: %w", r.Dst, r.LinkName, ErrLinkPending)
	}
	return nil
}

// target is one destination to reconcile, with its desired route if any.
type target struct {
	dst     netip.Prefix
	route   Route
	desired bool
}

// passResult is what one write pass left to do.
type passResult struct {
	failed    []netip.Prefix // retry later
	conflicts []netip.Prefix // add refused: a route already sits there
	pending   []netip.Prefix
	errs      []error
}

// apply reconciles every dirty destination, or only the given ones. When an
// add finds the slot taken and the kernel view was not just re-read, it
// re-reads and tries once more: the slot may hold our own route that an
// event had not reported yet, or someone else's, which is then an error.
func (t *Table) apply(ctx context.Context, only []netip.Prefix) (_ []netip.Prefix, err error) {
	t.applyMu.Lock()
	defer t.applyMu.Unlock()
	t.counters.applies.Add(1)

	start := time.Now()
	before := t.counters.added.Load() + t.counters.replaced.Load() + t.counters.removed.Load()
	defer func() {
		n := t.counters.added.Load() + t.counters.replaced.Load() + t.counters.removed.Load() - before
		if n > 0 {
			t.log.Debug("routes applied", "writes", n, "targeted", only != nil)
		}
		if t.opts.OnApply != nil && (n > 0 || err != nil) {
			t.opts.OnApply(time.Since(start), err)
		}
	}()
	force := false
	for pass := 0; ; pass++ {
		resync := t.beginPass(only, force)
		if resync {
			if err := t.readKernel(); err != nil {
				t.mu.Lock()
				t.needResync = true
				t.mu.Unlock()
				return nil, err
			}
		}
		targets := t.plan(only, resync)
		res := t.write(ctx, targets, resync, only != nil)
		t.counters.pending.Store(int64(len(t.pending)))

		t.mu.Lock()
		for _, p := range res.failed {
			t.dirty[p] = struct{}{}
		}
		for _, p := range res.conflicts {
			t.dirty[p] = struct{}{}
		}
		t.mu.Unlock()

		if !resync && pass == 0 && (len(res.conflicts) > 0 || (only == nil && t.resyncWanted())) {
			t.log.Debug("route slot taken or a second route of ours seen, re-reading the kernel", "conflicts", len(res.conflicts))
			force = true
			continue
		}
		for _, p := range res.conflicts {
			res.errs = append(res.errs, fmt.Errorf("add route %s: a route to it that Calyx does not own is in the way: %w", p, unix.EEXIST))
		}
		t.counters.errors.Add(uint64(len(res.conflicts)))
		if len(res.errs) > 0 {
			t.log.Warn("route apply had failures", "failed", len(res.errs), "first", res.errs[0])
		}
		return res.pending, errors.Join(res.errs...)
	}
}

// beginPass decides whether this pass re-reads the kernel and, if so,
// drops the queued events that the re-read supersedes. Without live
// subscriptions a full pass always re-reads: nothing else would notice
// drift.
func (t *Table) beginPass(only []netip.Prefix, force bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	resync := force || (only == nil && (t.needResync || !t.watching))
	if resync {
		t.needResync = false
		t.kernelEvents = resetEvents(t.kernelEvents)
		clear(t.linkEvents)
	}
	return resync
}

// plan folds queued events into the kernel view and lists the targets with
// a copy of their desired routes.
func (t *Table) plan(only []netip.Prefix, resynced bool) []target {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mergeEventsLocked()
	if resynced {
		// The fresh kernel view may differ anywhere.
		for p := range t.desired.All() {
			t.dirty[p] = struct{}{}
		}
		for p := range t.actual.All() {
			t.dirty[p] = struct{}{}
		}
	}
	targets := t.targets[:0]
	if cap(targets) > 16384 { // a burst's buffer goes
		targets = nil
	}
	add := func(p netip.Prefix) {
		r, ok := t.desired.Get(p)
		targets = append(targets, target{dst: p, route: r.route(p), desired: ok})
	}
	if only != nil {
		// Each destination once: the requests of a pass go out together,
		// so a second one would be decided before the first is answered.
		for _, p := range slices.Compact(slices.SortedFunc(slices.Values(only), comparePrefix)) {
			delete(t.dirty, p)
			add(p)
		}
	} else {
		for p := range t.dirty {
			add(p)
		}
		if len(t.dirty) > 4096 {
			t.dirty = make(map[netip.Prefix]struct{}) // clearing would keep a burst's memory
		} else {
			clear(t.dirty)
		}
	}
	// Reused by the next pass: write is done with it by then (applyMu).
	t.targets = targets
	return targets
}

// mergeEventsLocked applies the events Run queued to the kernel view and
// marks what they affect dirty. Both locks are held.
func (t *Table) mergeEventsLocked() {
	if len(t.linkEvents) > 0 {
		changed := make(map[string]bool)
		gone := make(map[int]bool)
		for idx, ev := range t.linkEvents {
			old, had := t.linkNames[idx]
			prev := t.links[old]
			if prev.index != idx {
				prev = linkState{} // the name moved on to a newer interface
			}
			if had && (ev.deleted || old != ev.name) {
				// The name may already belong to a newer interface whose
				// event came first in this map's order: keep that one.
				if cur, ok := t.links[old]; ok && cur.index == idx {
					delete(t.links, old)
				}
				delete(t.linkNames, idx)
				changed[old] = true
			}
			if ev.deleted || (had && prev.up && !ev.up) {
				// The kernel flushes routes through a link that goes down
				// or away without sending route events.
				gone[idx] = true
			}
			if ev.deleted {
				continue
			}
			now := linkState{index: idx, up: ev.up}
			if cur, ok := t.links[ev.name]; !ok || cur != now {
				t.links[ev.name] = now
				t.linkNames[idx] = ev.name
				changed[ev.name] = true
			}
		}
		clear(t.linkEvents)
		if len(gone) > 0 {
			for p, k := range t.actual.All() {
				for idx := range gone {
					if k.usesLink(idx) {
						t.actual.Delete(p)
						t.dirty[p] = struct{}{}
						break
					}
				}
			}
		}
		if len(changed) > 0 {
			for p, r := range t.desired.All() {
				if r.link != "" && changed[r.link] {
					t.dirty[p] = struct{}{}
				}
			}
		}
	}
	for p, ev := range t.kernelEvents {
		have, had := t.actual.Get(p)
		if had && ev.k.priority != have.priority {
			// Another route of ours at p, with another metric (made by
			// hand): only a re-read tells what is there; the pass that
			// merged this does one.
			t.needResync = true
			continue
		}
		if ev.deleted {
			if !had {
				continue
			}
			t.actual.Delete(p)
		} else {
			t.actual.Set(p, t.hops.kernel(ev.k))
			if had && sameForwarding(have, ev.k, p.Addr().Is4()) {
				// The echo of our own write: nothing to reconcile.
				continue
			}
		}
		t.dirty[p] = struct{}{}
	}
	t.kernelEvents = resetEvents(t.kernelEvents)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// resetEvents empties the event queue; a map that a burst of events grew
// large is dropped rather than cleared, since clearing keeps its memory.
func resetEvents(m map[netip.Prefix]kernelEvent) map[netip.Prefix]kernelEvent {
	if len(m) > 1024 {
		return make(map[netip.Prefix]kernelEvent)
	}
	clear(m)
	return m
}

// write reconciles each target with one netlink request at most. Only the
// apply goroutine runs it (applyMu held), without mu. Requests go to the
// kernel in batches (see routeWriter); each outcome is handled in order as
// its batch returns.
//
// A targeted pass (few routes, typically a workload that was just wired)
// looks its interfaces up in the kernel instead of trusting the cache: the
// link event of a veth created a moment ago may not have been seen yet.
func (t *Table) write(ctx context.Context, targets []target, resynced, targeted bool) passResult {
	var res passResult
	b := writeBatch{t: t, res: &res, reqs: t.reqs[:0]}
	defer func() { t.reqs = b.reqs }()
	if resynced {
		for _, d := range t.extras {
			b.del(d.dst, d.k, true)
		}
		t.extras = nil
	}
	for i, tg := range targets {
		if i%256 == 0 && ctx.Err() != nil {
			b.flush()
			for _, rest := range targets[i:] {
				res.failed = append(res.failed, rest.dst)
			}
			res.errs = append(res.errs, fmt.Errorf("apply routes: %w", ctx.Err()))
			return res
		}
		p := tg.dst
		have, hasHave := t.actual.Get(p)
		if !tg.desired {
			delete(t.pending, p)
			if hasHave {
				b.del(p, have, false)
			}
			continue
		}
		r := tg.route
		ifindex := 0
		if r.LinkName != "" {
			ls, ok := t.link(r.LinkName, targeted)
			if !ok || !ls.up {
				t.pending[p] = struct{}{}
				res.pending = append(res.pending, p)
				if hasHave && !(ok && have.usesLink(ls.index)) {
					// It forwards somewhere we no longer want.
					b.del(p, have, false)
				}
				continue
			}
			ifindex = ls.index
		}
		delete(t.pending, p)
		want := wantKernel(r, ifindex)
		if hasHave && have.priority == writeMetric(p) && sameForwarding(want, have, p.Addr().Is4()) {
			continue
		}
		if hasHave && have.priority == writeMetric(p) {
			b.put(OpReplace, r, want)
			continue
		}
		// A replace would hit the slot of our metric, which may hold
		// someone else's route: add exclusively, then delete ours at
		// the other metric (a hand-made one).
		b.put(OpAdd, r, want)
		if hasHave {
			b.del(p, have, true)
		}
	}
	b.flush()
	return res
}

// writeBatch queues the requests of one pass and handles their outcomes.
// Adds are exclusive so that a route of another protocol at the same
// destination is never overwritten; replaces are only used where the
// kernel view shows our own route.
type writeBatch struct {
	t    *Table
	res  *passResult
	reqs []writeReq
}

// writeReq is one queued request. A request that the BeforeWrite hook
// failed is not sent; err holds the hook's error.
type writeReq struct {
	op    WriteOp
	route Route // put: the desired route (for messages)
	dst   netip.Prefix
	k     kroute // put: what to write; delete: the kernel's route
	extra bool   // delete of a duplicate that is not in the kernel view
	sent  bool
	err   error
}

func (b *writeBatch) put(op WriteOp, r Route, want kroute) {
	b.queue(writeReq{op: op, route: r, dst: r.Dst, k: want})
}

// del deletes our route at p; a route already gone counts as deleted.
func (b *writeBatch) del(p netip.Prefix, have kroute, extra bool) {
	b.queue(writeReq{op: OpDelete, dst: p, k: have, extra: extra})
}

func (b *writeBatch) queue(rq writeReq) {
	t := b.t
	if hook := t.opts.BeforeWrite; hook != nil {
		rq.err = hook(rq.op, rq.dst)
	}
	full := false
	if rq.err == nil {
		rq.sent = true
		full = t.k.queueWrite(rq.op, rq.dst, rq.k, t.table, t.opts.Protocol)
	}
	b.reqs = append(b.reqs, rq)
	if full || len(b.reqs) >= 4*writeBatchMax {
		b.flush()
	}
}

// flush sends what is queued and handles every outcome in order.
func (b *writeBatch) flush() {
	t, res := b.t, b.res
	results := t.k.flushWrites()
	next := 0
	for _, rq := range b.reqs {
		err := rq.err
		if rq.sent {
			err = results[next]
			next++
		}
		p := rq.dst
		if rq.op == OpDelete {
			switch {
			case err == nil || errors.Is(err, unix.ESRCH):
				if !rq.extra {
					t.actual.Delete(p)
				}
				if err == nil {
					t.counters.removed.Add(1)
				}
			default:
				t.counters.errors.Add(1)
				res.errs = append(res.errs, fmt.Errorf("delete route %s: %w", p, err))
				if !rq.extra {
					res.failed = append(res.failed, p)
				}
			}
			continue
		}
		r := rq.route
		switch {
		case err == nil:
			k := rq.k
			k.priority = writeMetric(p) // as the kernel reports it
			t.actual.Set(p, t.hops.kernel(k))
			if rq.op == OpAdd {
				t.counters.added.Add(1)
			} else {
				t.counters.replaced.Add(1)
			}
		case rq.op == OpAdd && errors.Is(err, unix.EEXIST):
			res.conflicts = append(res.conflicts, p)
		case r.LinkName != "" && (errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENETDOWN)):
			// The interface went away under us; its event makes it
			// pending for the next pass.
			t.pending[p] = struct{}{}
			res.pending = append(res.pending, p)
			delete(t.links, r.LinkName)
		default:
			t.counters.errors.Add(1)
			res.errs = append(res.errs, fmt.Errorf("%s route %s: %w", rq.op, r, err))
			res.failed = append(res.failed, p)
		}
	}
	clear(b.reqs)
	b.reqs = b.reqs[:0]
}

// link resolves an interface name from the cache, or from the kernel.
func (t *Table) link(name string, lookup bool) (linkState, bool) {
	if !lookup {
		ls, ok := t.links[name]
		return ls, ok
	}
	ls, err := t.k.linkByName(name)
	if err != nil {
		delete(t.links, name)
		return linkState{}, false
	}
	t.links[name] = ls
	t.linkNames[ls.index] = name
	return ls, true
}

// writeMetric is the metric the kernel gives the routes the table writes
// (none set): 0 for IPv4, 1024 for IPv6.
func writeMetric(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1024
}

// resyncWanted reports whether a re-read has been asked for.
func (t *Table) resyncWanted() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.needResync
}

// isWatching reports whether Run's subscriptions are live.
func (t *Table) isWatching() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.watching
}
