package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// bestPathWatch asks GoBGP for best-path changes, starting with the whole
// current table as the first event. UseMultiplePaths makes each changed
// destination carry all its ECMP paths.
var bestPathWatch = &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
	Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}},
}}

func (b *goBGP) Subscribe(fn func(LearnedUpdate)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || fn == nil {
		return
	}
	s := &subscriber{fn: fn, log: b.log, wake: make(chan struct{}, 1), room: make(chan struct{}, 1), done: make(chan struct{})}
	b.subs = append(b.subs, s)
	if b.started {
		if err := s.watch(b.ctx, b.srv, b.global.RouterID.String()); err != nil {
			b.log.Error("bgp: cannot watch best paths for a subscriber", "err", err)
		}
	}
}

// subscriber feeds one Subscribe callback. GoBGP's watch callback only
// queues the raw event (GoBGP runs it on its watch goroutine); decoding,
// de-duplication and the call to fn happen on the subscriber's own
// goroutine, which takes everything queued at once: a natural batch.
//
// The queue is bounded: when the subscriber falls behind (a 100k-prefix
// table arriving), the watch goroutine waits, and the backlog stays in
// GoBGP's own queue as its native paths, a fraction of the size of the
// converted API messages, which would otherwise pile up here.
type subscriber struct {
	fn  func(LearnedUpdate)
	log *slog.Logger

	mu      sync.Mutex
	pending [][]*api.Path
	spare   [][]*api.Path // the previous batch's slice, reused
	running bool
	wake    chan struct{}
	room    chan struct{} // deliver took the queue
	done    chan struct{}
}

// maxPendingEvents bounds the queue (GoBGP sends one event per changed
// destination; the first, the whole table, always fits).
const maxPendingEvents = 4096

func (s *subscriber) watch(ctx context.Context, srv *server.BgpServer, routerID string) error {
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	go s.deliver(ctx, routerID)
	return srv.WatchEvent(ctx, bestPathWatch, s.enqueue)
}

func (s *subscriber) enqueue(r *api.WatchEventResponse) {
	t := r.GetTable()
	if t == nil {
		return
	}
	for {
		s.mu.Lock()
		if len(s.pending) < maxPendingEvents {
			s.pending = append(s.pending, t.Paths)
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

// deliver runs until ctx ends. view is what fn has been told, so that fn
// sees neither no-op updates nor withdrawals of prefixes it never got.
func (s *subscriber) deliver(ctx context.Context, routerID string) {
	defer close(s.done)
	view := map[netip.Prefix][]netip.Addr{}
	dec := bestPathDecoder{routerID: routerID}
	changed := map[netip.Prefix][]netip.Addr{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		events := s.pending
		s.pending, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		select {
		case s.room <- struct{}{}:
		default:
		}

		for _, ev := range events {
			dec.merge(changed, ev) // later events supersede earlier ones
		}
		clear(events)
		s.mu.Lock()
		s.spare = events
		s.mu.Unlock()
		out := make(map[netip.Prefix][]netip.Addr, len(changed))
		for pfx, nhs := range changed {
			old, had := view[pfx]
			switch {
			case len(nhs) == 0 && had:
				delete(view, pfx)
				out[pfx] = nil
			case len(nhs) == 0, had && slices.Equal(old, nhs):
			default:
				view[pfx] = nhs
				out[pfx] = nhs
			}
		}
		if len(changed) > 1024 {
			changed = map[netip.Prefix][]netip.Addr{} // clearing would keep a burst's memory
		} else {
			clear(changed)
		}
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
	routerID := b.global.RouterID.String()
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("bgp learned routes: %w", err)
	}
	// A watch's first event is the table as GoBGP selects it right now, ECMP
	// sets included: the same computation Subscribe sees, with no cache.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan []*api.Path, 1)
	var once sync.Once
	err = srv.WatchEvent(wctx, bestPathWatch, func(r *api.WatchEventResponse) {
		if t := r.GetTable(); t != nil {
			once.Do(func() { got <- t.Paths })
		}
	})
	if err != nil {
		return nil, fmt.Errorf("bgp learned routes: %w", err)
	}
	select {
	case paths := <-got:
		routes := make(map[netip.Prefix][]netip.Addr, len(paths))
		dec := bestPathDecoder{routerID: routerID}
		dec.merge(routes, paths)
		for pfx, nhs := range routes {
			if len(nhs) == 0 {
				delete(routes, pfx)
			}
		}
		return routes, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("bgp learned routes: %w", ctx.Err())
	}
}
