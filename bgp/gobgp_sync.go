package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// syncTracker closes done when the initial routing information is in:
// every configured peer established and, where graceful restart was
// negotiated, its End-of-RIB seen for every such family; or when the
// restart time has passed since Start.
//
// It counts End-of-RIB markers itself, from a watch, rather than trusting
// GoBGP's EndOfRibReceived: while restarting, GoBGP marks it set for peers
// that restart too (so that neither waits for the other before sending),
// and such a peer's routes have not arrived yet.
type syncTracker struct {
	log   *slog.Logger
	peers *peerCache // the peer events invalidate it
	done  chan struct{}
	once  sync.Once
	kick  chan struct{}

	mu      sync.Mutex
	known   bool // SetPeers was called: the peer set is meaningful
	addrs   []netip.Addr
	eor     map[netip.Addr]map[Family]bool // End-of-RIBs of the current session
	running bool
	stopped chan struct{}
}

func newSyncTracker(log *slog.Logger, peers *peerCache) *syncTracker {
	return &syncTracker{
		log:     log,
		peers:   peers,
		done:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
		eor:     map[netip.Addr]map[Family]bool{},
		stopped: make(chan struct{}),
	}
}

func (t *syncTracker) start(ctx context.Context, srv *server.BgpServer, deadline time.Duration) error {
	err := srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: t.onPeer, OnPathEor: t.onEOR},
		server.WatchPeer(), server.WatchEor(false))
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.running = true
	t.mu.Unlock()
	go t.loop(ctx, srv, deadline)
	return nil
}

// onPeer and onEOR run on GoBGP's watch goroutine; they only update the
// bookkeeping and poke the loop. Peer-state and End-of-RIB events come
// through one watch, in order, so a session's End-of-RIB never precedes
// its Established.
func (t *syncTracker) onPeer(pe *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	t.peers.invalidate()
	if pe.Type != apiutil.PEER_EVENT_STATE && pe.Type != apiutil.PEER_EVENT_INIT {
		return
	}
	addr := pe.Peer.State.NeighborAddress.Unmap()
	if !addr.IsValid() {
		return
	}
	t.mu.Lock()
	if pe.Peer.State.SessionState == gobgp.BGP_FSM_ESTABLISHED {
		if t.eor[addr] == nil || pe.Type == apiutil.PEER_EVENT_STATE {
			t.eor[addr] = map[Family]bool{}
		}
	} else {
		delete(t.eor, addr)
	}
	t.mu.Unlock()
	t.poke()
}

func (t *syncTracker) onEOR(p *apiutil.Path, _ time.Time) {
	fam, ok := familyFromNative(p.Family)
	addr := p.PeerAddress.Unmap()
	if !ok || !addr.IsValid() {
		return
	}
	t.mu.Lock()
	if t.eor[addr] == nil {
		t.eor[addr] = map[Family]bool{}
	}
	t.eor[addr][fam] = true
	t.mu.Unlock()
	t.poke()
}

func (t *syncTracker) poke() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

func (t *syncTracker) peersChanged(peers []netip.Addr) {
	t.mu.Lock()
	t.known, t.addrs = true, peers
	t.mu.Unlock()
	t.poke()
}

func (t *syncTracker) isDone() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *syncTracker) loop(ctx context.Context, srv *server.BgpServer, deadline time.Duration) {
	defer close(t.stopped)
	started := time.Now()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	// The ticker is a backstop; events normally drive the evaluation.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		synced, waiting := t.evaluate(ctx, srv)
		if synced {
			t.finish("all peers sent their routes", started, nil)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			t.finish("deadline passed", started, waiting)
			return
		case <-t.kick:
		case <-tick.C:
		}
	}
}

func (t *syncTracker) finish(why string, started time.Time, waiting []string) {
	t.once.Do(func() {
		close(t.done)
		if len(waiting) > 0 {
			t.log.Warn("bgp initial sync done without some peers", "reason", why,
				"after", time.Since(started).Round(time.Millisecond), "notSynced", waiting)
			return
		}
		t.log.Info("bgp initial sync done", "reason", why, "after", time.Since(started).Round(time.Millisecond))
	})
}

// evaluate reports whether every configured peer has synced, and if not,
// which are still awaited (for the log).
func (t *syncTracker) evaluate(ctx context.Context, srv *server.BgpServer) (bool, []string) {
	t.mu.Lock()
	known := t.known
	peers := append([]netip.Addr(nil), t.addrs...)
	eor := make(map[netip.Addr]map[Family]bool, len(t.eor))
	for a, m := range t.eor {
		c := make(map[Family]bool, len(m))
		for f, v := range m {
			c[f] = v
		}
		eor[a] = c
	}
	t.mu.Unlock()
	if !known {
		return false, []string{"peer configuration"}
	}
	// Through the cache: this runs every second and on every event until
	// the sync is done, while a peer may be sending 100k prefixes.
	state, err := t.peers.list(ctx, srv)
	if err != nil {
		return false, []string{"peer state: " + err.Error()}
	}
	var waiting []string
	for _, a := range peers {
		p := state[a]
		if p == nil || p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED {
			waiting = append(waiting, a.String()+" (not established)")
			continue
		}
		for _, af := range p.GetAfiSafis() {
			gr := af.GetMpGracefulRestart().GetState()
			fam, ok := familyFromAPI(af.GetConfig().GetFamily())
			if ok && gr.GetAdvertised() && gr.GetReceived() && !eor[a][fam] {
				waiting = append(waiting, fmt.Sprintf("%s (no End-of-RIB for %s)", a, fam))
			}
		}
	}
	return len(waiting) == 0, waiting
}

// wait blocks until the loop has exited (after ctx ended).
func (t *syncTracker) wait() {
	t.mu.Lock()
	running := t.running
	t.mu.Unlock()
	if running {
		<-t.stopped
	}
}
