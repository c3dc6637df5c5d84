package ipam

import (
	"context"
	"net/netip"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type opKind int

const (
	opAllocate opKind = iota
	opRelease
)

func (k opKind) String() string { return [...]string{"allocation", "release"}[k] }

// op is one queued Allocate or Release.
type op struct {
	kind   opKind
	ctx    context.Context
	req    Request // opAllocate
	handle string

	done   chan struct{}
	result []netip.Prefix
	err    error
}

// cost estimates the operations the op adds to a transaction, so a batch
// stays under etcd's default limit of 128 per transaction.
func (o *op) cost() int { return 3 + len(o.req.IPs) }

func (o *op) finish(result []netip.Prefix, err error) {
	o.result, o.err = result, err
	close(o.done)
}

const (
	// maxBatchCost keeps compares, successes and failures each below 128.
	maxBatchCost = 96
	// batchTimeout bounds one batch even if its callers wait forever.
	batchTimeout = 60 * time.Second
)

func (i *IPAM) submit(o *op) {
	i.mu.Lock()
	i.queue = append(i.queue, o)
	start := !i.running
	i.running = true
	i.mu.Unlock()
	if start {
		go i.run()
	}
}

// run drains the queue one batch at a time; it ends when the queue is empty
// so an idle IPAM holds no goroutine.
func (i *IPAM) run() {
	for {
		batch := i.takeBatch()
		if batch == nil {
			return
		}
		i.runBatch(batch)
	}
}

// takeBatch takes the longest head of the queue that fits one transaction
// and names each handle once (a second op on a handle waits for the next
// batch, so it sees the first one's outcome).
func (i *IPAM) takeBatch() []*op {
	i.mu.Lock()
	defer i.mu.Unlock()
	seen := map[string]bool{}
	cost, n := 0, 0
	for n < len(i.queue) {
		o := i.queue[n]
		if seen[o.handle] || (n > 0 && cost+o.cost() > maxBatchCost) {
			break
		}
		seen[o.handle] = true
		cost += o.cost()
		n++
	}
	if n == 0 {
		i.running = false
		return nil
	}
	batch := make([]*op, n)
	copy(batch, i.queue)
	i.queue = append(i.queue[:0], i.queue[n:]...)
	return batch
}

// batchContext ends when every op's caller has given up (nobody waits for
// the result any more) or after batchTimeout. Its requests require an etcd
// leader: a member without one (the cluster lost quorum, or elects) fails
// them at once instead of holding the batch, and every op queued behind
// it, until the callers give up.
func batchContext(ops []*op) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), batchTimeout)
	var left atomic.Int32
	left.Store(int32(len(ops)))
	stops := make([]func() bool, len(ops))
	for k, o := range ops {
		stops[k] = context.AfterFunc(o.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
