package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// watchBest asks GoBGP for best-path changes, starting with the whole
// current table as the first event. (A WatchEvent without options fails
// with "no events to watch".)
func watchBest(ctx context.Context, srv *server.BgpServer, fn func([]*apiutil.Path, time.Time)) error {
	return srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnBestPath: fn}, server.WatchBestPath(true))
}

func (b *goBGP) Subscribe(fn func(LearnedUpdate)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || fn == nil {
		return
	}
	s := &subscriber{fn: fn, log: b.log, changed: b.peerList.invalidate, wake: make(chan struct{}, 1), room: make(chan struct{}, 1), done: make(chan struct{})}
	b.subs = append(b.subs, s)
	if b.started {
		if err := s.watch(b.ctx, b.srv, b.global.RouterID); err != nil {
			b.log.Error("bgp: cannot watch best paths for a subscriber", "err", err)
		}
	}
}

// subscriber feeds one Subscribe callback. GoBGP's watch callback (on
// GoBGP's watch goroutine) only decodes the few fields Calyx needs and
// queues them; folding into the best sets and the call to fn happen on the
// subscriber's own goroutine, which takes everything queued at once: a
// natural batch.
//
// The queue is bounded: when the subscriber falls behind (a 100k-prefix
// table arriving), the watch goroutine waits and the backlog stays in
// GoBGP's own queue.
type subscriber struct {
	fn  func(LearnedUpdate)
	log *slog.Logger
	// changed is told of every best-path event: the RIB changed, so the
	// cached peer list's prefix counts are out of date.
	changed func()

	mu      sync.Mutex
	pending []bestChange
	spare   []bestChange // the previous batch's buffer, reused
	running bool
	wake    chan struct{}
	room    chan struct{} // deliver took the queue
	done    chan struct{}
}

// maxPendingChanges bounds the queue (the first event, the whole table,
// always goes in).
const maxPendingChanges = 64 << 10

func (s *subscriber) watch(ctx context.Context, srv *server.BgpServer, routerID netip.Addr) error {
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	go s.deliver(ctx)
	return watchBest(ctx, srv, func(paths []*apiutil.Path, _ time.Time) { s.enqueue(paths, routerID) })
}

func (s *subscriber) enqueue(paths []*apiutil.Path, routerID netip.Addr) {
	s.changed()
	for {
		s.mu.Lock()
		if len(s.pending) < maxPendingChanges {
			s.pending = decodeBest(s.pending, paths, routerID)
			s.mu.Unlock()
			break
		}
		s.mu.Unlock()
		select {
		case <-s.room:
		case <-s.done:
			return
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// deliver runs until ctx ends, keeping the best sets of every prefix, so
// that fn sees neither no-op updates nor withdrawals of prefixes it never
// got.
func (s *subscriber) deliver(ctx context.Context) {
	defer close(s.done)
	table := newBestTable()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		batch := s.pending
		s.pending, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		select {
		case s.room <- struct{}{}:
		default:
		}

		out := table.foldChanges(batch)
		if cap(batch) > 4*maxPendingChanges {
			batch = nil // a table's worth of buffer goes
		}
		s.mu.Lock()
		s.spare = batch[:0]
		s.mu.Unlock()
		if len(out) > 0 && ctx.Err() == nil {
			s.fn(LearnedUpdate{Routes: out})
		}
	}
}

// wait blocks until the delivery goroutine has exited (after ctx ended).
func (s *subscriber) wait() {
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if running {
		<-s.done
	}
}

func (b *goBGP) Learned(ctx context.Context) (map[netip.Prefix][]netip.Addr, error) {
	b.mu.Lock()
	srv, err := b.serverLocked()
	routerID := b.global.RouterID
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("bgp learned routes: %w", err)
	}
	// A watch's first event is the table as GoBGP selects it right now, ECMP
	// sets included: the same computation Subscribe sees, with no cache.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan []bestChange, 1)
	var once sync.Once
	err = watchBest(wctx, srv, func(paths []*apiutil.Path, _ time.Time) {
		once.Do(func() { got <- decodeBest(nil, paths, routerID) })
	})
	if err != nil {
		return nil, fmt.Errorf("bgp learned routes: %w", err)
	}
	select {
	case changes := <-got:
		t := newBestTable()
		for _, c := range changes {
			t.apply(c)
		}
		return t.routes(), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("bgp learned routes: %w", ctx.Err())
	}
}
