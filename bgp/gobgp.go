package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// connectRetry is how often a session that is down retries (GoBGP's default
// of 120 s leaves a peer that booted after us unconnected for minutes).
const connectRetry = 5 * time.Second

// goBGP is the Speaker on an embedded GoBGP v4 server. Every GoBGP type
// stays in the gobgp*.go files.
type goBGP struct {
	log *slog.Logger

	// mu guards the fields below and serialises the setters, so that the
	// diff against peers/advs is never interleaved.
	mu      sync.Mutex
	srv     *server.BgpServer
	global  Global
	started bool
	closed  bool
	peers   map[netip.Addr]Peer
	advs    map[netip.Prefix]advertised
	subs    []*subscriber
	// The policy and its rendering in GoBGP (gobgp_render.go).
	policy     Policy
	rend       *rendered
	gen        int
	policyDone string                // policyKey of what is installed
	peerDone   map[netip.Addr]string // peerKey of each peer in it
	// ctx lives from Start to Close; the watches hang off it.
	ctx      context.Context
	cancel   context.CancelFunc
	sync     *syncTracker
	peerList *peerCache // GoBGP's peer list, shared by PeerStatus and sync
}

// NewGoBGP returns a Speaker backed by an embedded GoBGP server. It does
// nothing until Start.
func NewGoBGP(logger *slog.Logger) Speaker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &goBGP{
		log:   logger,
		peers: map[netip.Addr]Peer{},
		advs:  map[netip.Prefix]advertised{},
	}
	b.peerList = &peerCache{}
	b.sync = newSyncTracker(logger, b.peerList)
	return b
}

func (b *goBGP) Start(ctx context.Context, g Global) error {
	if err := g.Validate(); err != nil {
		return fmt.Errorf("bgp start: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return errors.New("bgp start: speaker is closed")
	case b.started:
		return errors.New("bgp start: speaker already started")
	}
	g.Families = append([]Family(nil), g.families()...)
	srv := server.NewBgpServer(server.LoggerOption(goBGPLogger(b.log), nil))
	go srv.Serve()

	port := g.ListenPort
	if port == 0 {
		port = DefaultPort
	}
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:              g.ASN,
		RouterId:         g.RouterID.String(),
		ListenPort:       int32(port),
		ListenAddresses:  g.ListenAddresses,
		UseMultiplePaths: true,
		// Only the families the agent runs: with none, GoBGP makes a RIB
		// table for each of its ~30 families, twice (global and route
		// server), each of 2,048 shards; ~9 MiB of heap for nothing.
		Families: globalFamilies(g.Families),
	}})
	if err != nil {
		// The listeners may be half open; Stop closes what exists.
		srv.Stop()
		return fmt.Errorf("bgp start (AS %d, router ID %s, port %d): %w", g.ASN, g.RouterID, port, err)
	}
	if err := installPolicies(ctx, srv, g.ASN); err != nil {
		srv.Stop()
		return fmt.Errorf("bgp start: policies: %w", err)
	}
	b.srv, b.global, b.started = srv, g, true
	if err := b.applyPolicyLocked(ctx, nil); err != nil {
		srv.Stop()
		b.started = false
		return fmt.Errorf("bgp start: policies: %w", err)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if err := b.sync.start(b.ctx, srv, g.restartTime()); err != nil {
		b.cancel()
		srv.Stop()
		b.started = false
		return fmt.Errorf("bgp start: watching sessions: %w", err)
	}
	for _, s := range b.subs {
		if err := s.watch(b.ctx, srv, g.RouterID); err != nil {
			b.log.Error("bgp: cannot watch best paths for a subscriber", "err", err)
		}
	}
	b.log.Info("bgp speaker started", "as", g.ASN, "routerID", g.RouterID, "port", port,
		"gracefulRestart", g.GracefulRestart.Enabled, "restartTime", g.restartTime(), "families", fmt.Sprint(g.Families))
	return nil
}

// server returns the running GoBGP server, or an error before Start or
// after Close.
func (b *goBGP) server() (*server.BgpServer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.serverLocked()
}

func (b *goBGP) serverLocked() (*server.BgpServer, error) {
	switch {
	case b.closed:
		return nil, errors.New("bgp speaker is closed")
	case !b.started:
		return nil, errors.New("bgp speaker is not started")
	}
	return b.srv, nil
}

func (b *goBGP) InitialSyncDone() <-chan struct{} { return b.sync.done }

func (b *goBGP) Close(graceful bool) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if !b.started {
		b.mu.Unlock()
		return nil
	}
	// Stop the watches first: tearing sessions down withdraws every learned
	// path inside GoBGP, and the agent must not see (and delete) them.
	b.cancel()
	subs, srv := b.subs, b.srv
	b.mu.Unlock()
	for _, s := range subs {
		s.wait()
	}
	b.sync.wait()

	// With AllowGracefulRestart, GoBGP closes the sessions that negotiated
	// graceful restart without a NOTIFICATION (RFC 4724 section 4: a Cease
	// would make the peer drop our routes) and sends Cease to the others.
	if err := srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		return fmt.Errorf("bgp stop: %w", err)
	}
	// Stop ends what StopBgp leaves running (the BFD server and its
	// socket); its own StopBgp finds nothing left to stop.
	srv.Stop()
	b.log.Info("bgp speaker stopped", "graceful", graceful)
	return nil
}

// hostPort joins an address and port for log and error messages.
func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// globalFamilies are the families as the global config numbers them.
func globalFamilies(fs []Family) []uint32 {
	out := make([]uint32, 0, len(fs))
	for _, f := range fs {
		t := oc.AFI_SAFI_TYPE_IPV4_UNICAST
		if f == IPv6Unicast {
			t = oc.AFI_SAFI_TYPE_IPV6_UNICAST
		}
		out = append(out, uint32(oc.AfiSafiTypeToIntMap[t]))
	}
	return out
}
