package scalebench

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
)

// etcdLoad is what one CNI ADD and one DEL cost etcd, averaged.
type etcdLoad struct {
	adds int
	// Unary etcd RPCs (round trips) per ADD / DEL, the idle rate taken
	// out; by method for the notes.
	addRPCs, delRPCs   float64
	addByMethod        map[string]float64
	firstAddRPCs       float64 // the first ADD on a node claims a block
	addBytes, delBytes float64 // keys and values written
	// The block rewrites of the ADDs and the DELs; what the legacy block
	// layout would have written per ADD / DEL for the same changes.
	addBlocks, delBlocks           []blockPut
	legacyAddBytes, legacyDelBytes float64
	addEvents, delEvents           float64 // watch events under the agents' prefix
	// agentEvents is what another node's agent counted per ADD
	// (calyx_datastore_events_total).
	agentEvents float64
}

// watchCounter counts the events (and bytes put) under the prefix every
// agent watches: each of them gets every one.
type watchCounter struct {
	mu            sync.Mutex
	events, bytes int
	legacy        *legacyView
	blocks        []blockPut // every block rewrite, in order
	cancel        context.CancelFunc
	done          chan struct{}
	lastRev       int64
}

func startWatchCounter(ctx context.Context, c *clientv3.Client) (*watchCounter, error) {
	resp, err := c.Get(ctx, datastore.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	lv, err := newLegacyView(ctx, c)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &watchCounter{legacy: lv, cancel: cancel, done: make(chan struct{})}
	wch := c.Watch(wctx, datastore.Prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		defer close(w.done)
		for r := range wch {
			w.mu.Lock()
			w.blocks = append(w.blocks, w.legacy.apply(r.Events)...)
			for _, ev := range r.Events {
				w.events++
				w.bytes += len(ev.Kv.Key)
				if ev.Type == clientv3.EventTypePut {
					w.bytes += len(ev.Kv.Value)
				}
				w.lastRev = ev.Kv.ModRevision
			}
			w.mu.Unlock()
		}
	}()
	return w, nil
}

func (w *watchCounter) stop() { w.cancel(); <-w.done }

// blockPuts are the block rewrites seen so far.
func (w *watchCounter) blockPuts() []blockPut {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.blocks)
}

// snapshot waits until the watch has delivered everything up to etcd's
// current revision, then returns the counts so far.
func (w *watchCounter) snapshot(ctx context.Context, c *clientv3.Client) (events, bytes int, err error) {
	resp, err := c.Get(ctx, datastore.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, 0, err
	}
	// Revisions outside the prefix never reach the watch: wait a moment
	// for those inside it, without knowing which they are.
	deadline := time.Now().Add(2 * time.Second)
	for {
		w.mu.Lock()
		caught := w.lastRev >= resp.Header.Revision
		events, bytes = w.events, w.bytes
		w.mu.Unlock()
		if caught || time.Now().After(deadline) {
			return events, bytes, nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return 0, 0, err
		}
	}
}

// unaryRPCs are etcd's handled unary RPCs so far, by method.
func unaryRPCs(ctx context.Context, l *lab.Lab) (map[string]float64, error) {
	s, err := scrape(ctx, l, "etcd", lab.EtcdMetricsAddr)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for series, v := range s {
		if strings.HasPrefix(series, "grpc_server_handled_total{") && label(series, "grpc_type") == "unary" {
			out[label(series, "grpc_method")] += v
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("etcd's metrics have no grpc_server_handled_total")
	}
	return out, nil
}

func rpcDelta(after, before map[string]float64) (total float64, by map[string]float64) {
	by = map[string]float64{}
	for m, v := range after {
		if d := v - before[m]; d > 0 {
			by[m] = d
			total += d
		}
	}
	return total, by
}

// agentEventCount is calyx_datastore_events_total of host's agent.
func agentEventCount(ctx context.Context, l *lab.Lab, host string) (float64, error) {
	s, err := scrape(ctx, l, host, "127.0.0.1:9091")
	if err != nil {
		return 0, err
	}
	return s.sum("calyx_datastore_events_total"), nil
}

// measureEtcdLoad times n CNI ADDs then n DELs on host1, one at a time as
// a kubelet starting pods one by one would, and counts what etcd did for
// them: round trips from etcd's own counters (less the idle rate measured
// just before: the agents' leases and status), bytes and events from a
// watch on the agents' prefix, and host2's agent's event counter.
func measureEtcdLoad(ctx context.Context, l *lab.Lab, n int, log *slog.Logger) (r etcdLoad, err error) {
	ds, err := l.Datastore()
	if err != nil {
		return r, err
	}
	c := ds.Etcd()
	r.adds = n
	// The first ADD on the node claims a block; counted apart.
	before, err := unaryRPCs(ctx, l)
	if err != nil {
		return r, err
	}
	if _, err := l.AddWorkload(ctx, "scale-first", "host1", map[string]string{"role": "server"}); err != nil {
		return r, err
	}
	after, err := unaryRPCs(ctx, l)
	if err != nil {
		return r, err
	}
	r.firstAddRPCs, _ = rpcDelta(after, before)

	idle, err := idleRPCRate(ctx, l, 2*time.Second)
	if err != nil {
		return r, err
	}
	w, err := startWatchCounter(ctx, c)
	if err != nil {
		return r, err
	}
	defer w.stop()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("scale-add-%d", i+1)
	}
	phase := func(what string, op func(name string) error) (rpcs float64, by map[string]float64, events, bytes int, err error) {
		e0, b0, err := w.snapshot(ctx, c)
		if err != nil {
			return 0, nil, 0, 0, err
		}
		before, err := unaryRPCs(ctx, l)
		if err != nil {
			return 0, nil, 0, 0, err
		}
		start := time.Now()
		for _, name := range names {
			if err := op(name); err != nil {
				return 0, nil, 0, 0, fmt.Errorf("%s %s: %w", what, name, err)
			}
		}
		took := time.Since(start)
		e1, b1, err := w.snapshot(ctx, c)
		if err != nil {
			return 0, nil, 0, 0, err
		}
		after, err := unaryRPCs(ctx, l)
		if err != nil {
			return 0, nil, 0, 0, err
		}
		total, by := rpcDelta(after, before)
		// Our own snapshot read (the second one) and the idle traffic are
		// not the ADDs'.
		total -= 1 + idle*took.Seconds()
		by["Range"]--
		log.Info(what, "count", n, "took", took.Round(time.Millisecond), "rpcs", total, "by_method", by, "events", e1-e0, "bytes", b1-b0)
		return total, by, e1 - e0, b1 - b0, nil
	}
	ev0, err := agentEventCount(ctx, l, "host2")
	if err != nil {
		return r, err
	}
	p0 := len(w.blockPuts())
	rpcs, by, events, bytes, err := phase("CNI ADD", func(name string) error {
		_, err := l.AddWorkload(ctx, name, "host1", map[string]string{"app": "scale"})
		return err
	})
	if err != nil {
		return r, err
	}
	ev1, err := agentEventCount(ctx, l, "host2")
	if err != nil {
		return r, err
	}
	r.addRPCs, r.addByMethod = rpcs/float64(n), perOp(by, n)
	r.addEvents, r.addBytes, r.agentEvents = float64(events)/float64(n), float64(bytes)/float64(n), (ev1-ev0)/float64(n)
	puts := w.blockPuts()
	r.addBlocks, p0 = puts[p0:], len(puts)
	r.legacyAddBytes = r.addBytes + legacyExtra(r.addBlocks)/float64(n)
	rpcs, _, events, bytes, err = phase("CNI DEL", func(name string) error { return l.DelWorkload(ctx, name) })
	if err != nil {
		return r, err
	}
	r.delRPCs, r.delEvents, r.delBytes = rpcs/float64(n), float64(events)/float64(n), float64(bytes)/float64(n)
	r.delBlocks = w.blockPuts()[p0:]
	r.legacyDelBytes = r.delBytes + legacyExtra(r.delBlocks)/float64(n)
	return r, nil
}

// idleRPCRate is etcd's unary RPCs per second while nobody acts.
func idleRPCRate(ctx context.Context, l *lab.Lab, d time.Duration) (float64, error) {
	before, err := unaryRPCs(ctx, l)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := sleep(ctx, d); err != nil {
		return 0, err
	}
	after, err := unaryRPCs(ctx, l)
	if err != nil {
		return 0, err
	}
	total, _ := rpcDelta(after, before)
	return total / time.Since(start).Seconds(), nil
}

func perOp(by map[string]float64, n int) map[string]float64 {
	out := map[string]float64{}
	for m, v := range by {
		if v/float64(n) >= 0.05 {
			out[m] = v / float64(n)
		}
	}
	return out
}

// methodsNote writes "Txn 2.0, Range 1.0".
func methodsNote(by map[string]float64) string {
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return by[keys[i]] > by[keys[j]] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, by[k]))
	}
	return strings.Join(parts, ", ")
}

// legacyExtra is how many more bytes the legacy layout would have written
// for these block rewrites.
func legacyExtra(puts []blockPut) float64 {
	extra := 0
	for _, p := range puts {
		extra += p.legacy - p.stored
	}
	return float64(extra)
}

// blockNote sums up the block rewrites: stored and legacy sizes at the
// emptiest and the fullest.
func blockNote(puts []blockPut) string {
	if len(puts) == 0 {
		return "no block rewrite seen"
	}
	lo, hi := puts[0], puts[0]
	for _, p := range puts {
		if p.used < lo.used {
			lo = p
		}
		if p.used > hi.used {
			hi = p
		}
	}
	return fmt.Sprintf("%d block rewrites, the block %d B at %d addresses and %d B at %d (legacy layout %d B and %d B)",
		len(puts), lo.stored, lo.used, hi.stored, hi.used, lo.legacy, hi.legacy)
}
