package routes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

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
func (t *Table) apply(ctx context.Context, only []netip.Prefix) ([]netip.Prefix, error) {
	t.applyMu.Lock()
	defer t.applyMu.Unlock()
	t.counters.applies.Add(1)

	before := t.counters.added.Load() + t.counters.replaced.Load() + t.counters.removed.Load()
	defer func() {
		if n := t.counters.added.Load() + t.counters.replaced.Load() + t.counters.removed.Load() - before; n > 0 {
			t.log.Debug("routes applied", "writes", n, "targeted", only != nil)
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

		if len(res.conflicts) > 0 && !resync && pass == 0 {
			t.log.Debug("route slot taken, re-reading the kernel", "count", len(res.conflicts))
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
		clear(t.kernelEvents)
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
		for p := range t.desired {
			t.dirty[p] = struct{}{}
		}
		for p := range t.actual {
			t.dirty[p] = struct{}{}
		}
	}
	var dsts []netip.Prefix
	if only != nil {
		dsts = only
		for _, p := range only {
			delete(t.dirty, p)
		}
	} else {
		dsts = make([]netip.Prefix, 0, len(t.dirty))
		for p := range t.dirty {
			dsts = append(dsts, p)
		}
		clear(t.dirty)
	}
	targets := make([]target, len(dsts))
	for i, p := range dsts {
		r, ok := t.desired[p]
		targets[i] = target{dst: p, route: r, desired: ok}
	}
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
			if had && (ev.deleted || old != ev.name) {
				delete(t.links, old)
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
			for p, k := range t.actual {
				for idx := range gone {
					if k.usesLink(idx) {
						delete(t.actual, p)
						t.dirty[p] = struct{}{}
						break
					}
				}
			}
		}
		if len(changed) > 0 {
			for p, r := range t.desired {
				if r.LinkName != "" && changed[r.LinkName] {
					t.dirty[p] = struct{}{}
				}
			}
		}
	}
	for p, k := range t.kernelEvents {
		if k == nil {
			delete(t.actual, p)
		} else {
			t.actual[p] = *k
		}
		t.dirty[p] = struct{}{}
	}
	clear(t.kernelEvents)
}

// write reconciles each target with one netlink request at most. Only the
// apply goroutine runs it (applyMu held), without mu.
//
// A targeted pass (few routes, typically a workload that was just wired)
// looks its interfaces up in the kernel instead of trusting the cache: the
// link event of a veth created a moment ago may not have been seen yet.
func (t *Table) write(ctx context.Context, targets []target, resynced, targeted bool) passResult {
	var res passResult
	if resynced {
		for _, d := range t.extras {
			if err := t.del(d.dst, d.k); err != nil {
				res.errs = append(res.errs, err)
			}
		}
		t.extras = nil
	}
	for i, tg := range targets {
		if i%256 == 0 && ctx.Err() != nil {
			for _, rest := range targets[i:] {
				res.failed = append(res.failed, rest.dst)
			}
			res.errs = append(res.errs, fmt.Errorf("apply routes: %w", ctx.Err()))
			return res
		}
		p := tg.dst
		have, hasHave := t.actual[p]
		if !tg.desired {
			delete(t.pending, p)
			if hasHave {
				if err := t.del(p, have); err != nil {
					res.errs = append(res.errs, err)
					res.failed = append(res.failed, p)
				}
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
					if err := t.del(p, have); err != nil {
						res.errs = append(res.errs, err)
						res.failed = append(res.failed, p)
					}
				}
				continue
			}
			ifindex = ls.index
		}
		delete(t.pending, p)
		want := wantKernel(r, ifindex)
		if hasHave && sameForwarding(want, have, p.Addr().Is4()) {
			continue
		}
		op := OpAdd
		if hasHave {
			op = OpReplace
		}
		err := t.put(op, p, want)
		switch {
		case err == nil:
			t.actual[p] = want
		case op == OpAdd && errors.Is(err, unix.EEXIST):
			res.conflicts = append(res.conflicts, p)
		case r.LinkName != "" && (errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENETDOWN)):
			// The interface went away under us; its event makes it
			// pending for the next pass.
			t.pending[p] = struct{}{}
			res.pending = append(res.pending, p)
			delete(t.links, r.LinkName)
		default:
			t.counters.errors.Add(1)
			res.errs = append(res.errs, fmt.Errorf("%s route %s: %w", op, r, err))
			res.failed = append(res.failed, p)
		}
	}
	return res
}

// put writes one route. Adds are exclusive so that a route of another
// protocol at the same destination is never overwritten; replaces are only
// used where the kernel view shows our own route.
func (t *Table) put(op WriteOp, p netip.Prefix, want kroute) error {
	if hook := t.opts.BeforeWrite; hook != nil {
		if err := hook(op, p); err != nil {
			return err
		}
	}
	nr := toNetlink(p, want, t.table, t.opts.Protocol)
	if op == OpAdd {
		if err := t.h.RouteAdd(nr); err != nil {
			return err
		}
		t.counters.added.Add(1)
		return nil
	}
	if err := t.h.RouteReplace(nr); err != nil {
		return err
	}
	t.counters.replaced.Add(1)
	return nil
}

// del deletes our route at p; a route already gone counts as deleted.
func (t *Table) del(p netip.Prefix, have kroute) error {
	if hook := t.opts.BeforeWrite; hook != nil {
		if err := hook(OpDelete, p); err != nil {
			t.counters.errors.Add(1)
			return fmt.Errorf("delete route %s: %w", p, err)
		}
	}
	err := t.h.RouteDel(toNetlinkDelete(p, have, t.table, t.opts.Protocol))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		t.counters.errors.Add(1)
		return fmt.Errorf("delete route %s: %w", p, err)
	}
	delete(t.actual, p)
	if err == nil {
		t.counters.removed.Add(1)
	}
	return nil
}

// link resolves an interface name from the cache, or from the kernel.
func (t *Table) link(name string, lookup bool) (linkState, bool) {
	if !lookup {
		ls, ok := t.links[name]
		return ls, ok
	}
	l, err := t.h.LinkByName(name)
	if err != nil {
		delete(t.links, name)
		return linkState{}, false
	}
	ls := linkState{index: l.Attrs().Index, up: l.Attrs().RawFlags&unix.IFF_UP != 0}
	t.links[name] = ls
	t.linkNames[ls.index] = name
	return ls, true
}

// isWatching reports whether Run's subscriptions are live.
func (t *Table) isWatching() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.watching
}
