package routes

import "sync/atomic"

// Stats are the table's counters since it was created, for metrics.
type Stats struct {
	Added    uint64 // routes created in the kernel
	Replaced uint64 // routes rewritten because they differed
	Removed  uint64 // stale routes deleted
	Errors   uint64 // kernel writes that failed
	Resyncs  uint64 // full re-reads of the kernel's routes
	Applies  uint64 // apply passes, owner-called and background
	Desired  int    // routes in the desired set
	Pending  int    // desired routes waiting for their interface to exist and be up
}

// Writes is the number of successful kernel writes.
func (s Stats) Writes() uint64 { return s.Added + s.Replaced + s.Removed }

type counters struct {
	added, replaced, removed, errors, resyncs, applies atomic.Uint64
	pending                                            atomic.Int64
}

// Stats returns a snapshot of the counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	desired := t.desired.Len()
	t.mu.Unlock()
	c := &t.counters
	return Stats{
		Added:    c.added.Load(),
		Replaced: c.replaced.Load(),
		Removed:  c.removed.Load(),
		Errors:   c.errors.Load(),
		Resyncs:  c.resyncs.Load(),
		Applies:  c.applies.Load(),
		Desired:  desired,
		Pending:  int(c.pending.Load()),
	}
}
