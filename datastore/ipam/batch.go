package ipam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"
)

// maxAttempts bounds the transactions one batch may try before its ops get
// ErrContention.
const maxAttempts = 100

// batchState is what a batch learnt that the caches do not hold: keys known
// to be absent.
type batchState struct {
	absentHandles map[string]bool
	absentBlocks  map[netip.Prefix]bool
	freshBlocks   map[netip.Prefix]bool // re-read in this batch
	freshHandles  map[string]bool       // handles of requested addresses re-read in this batch
	freshSnap     bool                  // the snapshot was read in this batch
}

// runBatch plans the ops into one transaction and commits it; on a lost
// race it takes what the failed transaction returned (the current blocks,
// handles and configuration) and plans again.
func (i *IPAM) runBatch(ops []*op) {
	ctx, stop := batchContext(ops)
	defer stop()
	bs := &batchState{absentHandles: map[string]bool{}, absentBlocks: map[netip.Prefix]bool{}, freshBlocks: map[netip.Prefix]bool{}, freshHandles: map[string]bool{}}
	live := ops
	for attempt := 0; ; attempt++ {
		live = dropCancelled(live)
		if len(live) == 0 {
			return
		}
		if attempt >= maxAttempts {
			failAll(live, fmt.Errorf("gave up after %d transactions: %w", attempt, ErrContention))
			return
		}
		if attempt > 1 {
			// Several nodes fighting over one block: spread them out.
			backoff := rand.N(time.Duration(min(attempt, 20)) * time.Millisecond)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
		}
		if err := i.prefetch(ctx, live, bs); err != nil {
			failAll(live, err)
			return
		}
		p := i.newPlan()
		var planned []*op
		restale := false
		for _, o := range live {
			err := i.planOp(ctx, p, o, bs)
			switch {
			case err == nil && o.kind == opRelease && !p.touches(o.handle):
				o.finish(nil, nil) // nothing to release
			case err == nil:
				planned = append(planned, o)
			case dependsOnConfig(err) && !bs.freshSnap:
				// The answer may come from a stale snapshot: read it
				// again before telling the caller.
				restale = true
			default:
				o.finish(nil, err)
			}
		}
		if restale {
			i.snap = nil
			live = unfinished(live)
			continue
		}
		if len(planned) == 0 {
			return
		}
		committed, err := i.commit(ctx, p, bs)
		if err != nil {
			failAll(planned, err)
			return
		}
		if committed {
			for _, o := range planned {
				if o.kind == opAllocate {
					o.finish(p.handlePuts[o.handle].Prefixes(), nil)
				} else {
					o.finish(nil, nil)
				}
			}
			return
		}
		// Lost a race. Ops whose outcome the failure already shows are done.
		for _, o := range planned {
			switch {
			case o.kind == opAllocate && i.handles[o.handle] != nil:
				o.finish(i.handles[o.handle].h.Prefixes(), nil) // a repeated ADD
			case o.kind == opRelease && bs.absentHandles[o.handle]:
				o.finish(nil, nil)
			}
		}
		live = unfinished(planned)
	}
}

func (p *plan) touches(handle string) bool {
	_, del := p.handleDels[handle]
	_, put := p.handlePuts[handle]
	return del || put
}

// dependsOnConfig: errors decided from pools, IPAMConfig or node labels.
func dependsOnConfig(err error) bool {
	for _, e := range []error{ErrPoolExhausted, ErrNoPoolForNode, ErrOutsidePools, ErrMaxBlocks, ErrBorrowForbidden} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func isDone(o *op) bool {
	select {
	case <-o.done:
		return true
	default:
		return false
	}
}

func unfinished(ops []*op) []*op {
	var out []*op
	for _, o := range ops {
		if !isDone(o) {
			out = append(out, o)
		}
	}
	return out
}

// dropCancelled finishes the ops whose caller gave up before they were
// committed.
func dropCancelled(ops []*op) []*op {
	var out []*op
	for _, o := range ops {
		if err := o.ctx.Err(); err != nil {
			o.finish(nil, err)
			continue
		}
		out = append(out, o)
	}
	return out
}

func failAll(ops []*op, err error) {
	for _, o := range ops {
		if !isDone(o) {
			o.finish(nil, err)
		}
	}
}

// planOp adds one op to the plan, or returns why it cannot be done.
func (i *IPAM) planOp(ctx context.Context, p *plan, o *op, bs *batchState) error {
	if o.kind == opRelease {
		c := i.handles[o.handle]
		if c == nil {
			return nil // known absent (prefetch read it)
		}
		i.releaseHandle(p, c.h, c.rev)
		return nil
	}
	req := &o.req
	var addrs []HandleAddress
	var err error
	if len(req.IPs) > 0 {
		addrs, err = i.planSpecific(ctx, p, req, bs)
	} else {
		addrs, err = i.planAuto(ctx, p, req)
	}
	if err != nil {
		p.undo(req.Handle)
		return err
	}
	p.handlePuts[req.Handle] = &Handle{ID: req.Handle, Node: req.Node, Attributes: req.Attrs, Created: p.now, Addresses: addrs}
	return nil
}

// planAuto takes one address of each family wanted.
func (i *IPAM) planAuto(ctx context.Context, p *plan, req *Request) ([]HandleAddress, error) {
	fams := req.Families
	if fams == nil {
		if fams = p.snap.families(req.Node); len(fams) == 0 {
			return nil, fmt.Errorf("node %q: no enabled IP pool selects it: %w", req.Node, ErrNoPoolForNode)
		}
	}
	var addrs []HandleAddress
	for _, fam := range fams {
		a, err := i.assign(ctx, p, req, fam)
		if err != nil {
			return addrs, fmt.Errorf("handle %q on node %q: %w", req.Handle, req.Node, err)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// assign takes an address of fam for the request: from the node's blocks,
// else from a newly claimed block, else borrowed from another node's block.
func (i *IPAM) assign(ctx context.Context, p *plan, req *Request, fam Family) (HandleAddress, error) {
	key := borrowKey{req.Node, fam}
	for round := 0; ; round++ {
		for _, cidr := range i.candidates(p, req.Node, fam, true) {
			if a, ok := i.takeFrom(p, cidr, req); ok {
				return a, nil
			}
		}
		if p.borrowing[key] {
			for _, cidr := range i.candidates(p, req.Node, fam, false) {
				if a, ok := i.takeFrom(p, cidr, req); ok {
					return a, nil
				}
			}
		}
		if round >= 4 || p.capacityHit[key] >= 8 {
			return HandleAddress{}, fmt.Errorf("no free %s address found after re-reading the blocks: %w", fam, ErrPoolExhausted)
		}
		p.capacityHit[key]++
		if err := p.capacityErr[key]; err != nil {
			return HandleAddress{}, err // another op of the batch found out already
		}
		if err := i.findCapacity(ctx, p, req.Node, fam); err != nil {
			if dependsOnConfig(err) {
				p.capacityErr[key] = err
			}
			return HandleAddress{}, err
		}
	}
}
