// Package bgpfake is a recording bgp.Speaker for unit tests of the packages
// that drive the speaker (the agent). It runs no BGP: it keeps what it is
// told, and lets the test play the network (learned routes, session states,
// the end of the initial sync).
package bgpfake

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/calyx-net/calyx/bgp"
)

// Speaker implements bgp.Speaker in memory. The zero value is not usable;
// call New.
type Speaker struct {
	mu       sync.Mutex
	global   *bgp.Global
	peers    []bgp.Peer
	advs     []bgp.Advertisement
	policy   bgp.Policy
	peerSets int
	advSets  int
	learned  map[netip.Prefix][]netip.Addr
	subs     []func(bgp.LearnedUpdate)
	status   []bgp.PeerStatus
	rib      []bgp.RIBEntry
	errs     map[string]error
	syncDone chan struct{}
	syncOnce sync.Once
	closed   bool
	graceful bool
}

var _ bgp.Speaker = (*Speaker)(nil)

// Method names for FailNext.
const (
	MethodStart             = "Start"
	MethodSetPeers          = "SetPeers"
	MethodSetAdvertisements = "SetAdvertisements"
	MethodSetPolicy         = "SetPolicy"
	MethodLearned           = "Learned"
	MethodPeerStatus        = "PeerStatus"
	MethodRIB               = "RIB"
)

func New() *Speaker {
	return &Speaker{
		learned:  map[netip.Prefix][]netip.Addr{},
		errs:     map[string]error{},
		syncDone: make(chan struct{}),
	}
}

// FailNext makes the next call of method return err (once). A failed
// setter records nothing, as if the speaker had rejected it all.
func (f *Speaker) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[method] = err
}

// takeErr returns and clears the injected error; the caller holds mu.
func (f *Speaker) takeErr(method string) error {
	err := f.errs[method]
	delete(f.errs, method)
	return err
}

func (f *Speaker) Start(_ context.Context, g bgp.Global) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeErr(MethodStart); err != nil {
		return err
	}
	if err := g.Validate(); err != nil {
		return err
	}
	if f.global != nil {
		return errors.New("bgpfake: already started")
	}
	f.global = &g
	return nil
}

func (f *Speaker) SetPeers(_ context.Context, peers []bgp.Peer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeErr(MethodSetPeers); err != nil {
		return err
	}
	f.peers = slices.Clone(peers)
	f.peerSets++
	return nil
}

func (f *Speaker) SetAdvertisements(_ context.Context, advs []bgp.Advertisement) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeErr(MethodSetAdvertisements); err != nil {
		return err
	}
	f.advs = slices.Clone(advs)
	f.advSets++
	return nil
}

func (f *Speaker) SetPolicy(_ context.Context, pol bgp.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeErr(MethodSetPolicy); err != nil {
		return err
	}
	f.policy = pol
	return nil
}

// Policy is the last successful SetPolicy.
func (f *Speaker) Policy() bgp.Policy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.policy
}

// Subscribe delivers the current learned table at once (synchronously,
// unlike the real speaker), then every injected change.
func (f *Speaker) Subscribe(fn func(bgp.LearnedUpdate)) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.subs = append(f.subs, fn)
	initial := cloneRoutes(f.learned)
	f.mu.Unlock()
	if len(initial) > 0 {
		fn(bgp.LearnedUpdate{Routes: initial})
	}
}

func (f *Speaker) Learned(context.Context) (map[netip.Prefix][]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeErr(MethodLearned); err != nil {
		return nil, err
	}
	return cloneRoutes(f.learned), nil
}

func (f *Speaker) InitialSyncDone() <-chan struct{} { return f.syncDone }

func (f *Speaker) PeerStatus(context.Context) ([]bgp.PeerStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeErr(MethodPeerStatus); err != nil {
		return nil, err
	}
	return slices.Clone(f.status), nil
}

func (f *Speaker) RIB(context.Context) ([]bgp.RIBEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.takeErr(MethodRIB); err != nil {
		return nil, err
	}
	return slices.Clone(f.rib), nil
}

func (f *Speaker) Close(graceful bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed, f.graceful = true, graceful
		f.subs = nil
	}
	return nil
}

// ---- what the test reads ------------------------------------------------

// Global is what Start got (nil before).
func (f *Speaker) Global() *bgp.Global {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.global == nil {
		return nil
	}
	g := *f.global
	return &g
}

// Peers is the last successful SetPeers, as given.
func (f *Speaker) Peers() []bgp.Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

// Advertisements is the last successful SetAdvertisements, sorted by prefix.
func (f *Speaker) Advertisements() []bgp.Advertisement {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.advs)
	slices.SortFunc(out, func(a, b bgp.Advertisement) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}

// Calls counts successful SetPeers and SetAdvertisements calls.
func (f *Speaker) Calls() (setPeers, setAdvertisements int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peerSets, f.advSets
}

// Closed reports whether Close was called, and how.
func (f *Speaker) Closed() (closed, graceful bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed, f.graceful
}

// ---- what the test plays ------------------------------------------------

// Learn makes prefix learned via nextHops (replacing what it had); no next
// hops withdraws it. Subscribers are called before Learn returns.
func (f *Speaker) Learn(prefix netip.Prefix, nextHops ...netip.Addr) {
	f.Update(map[netip.Prefix][]netip.Addr{prefix: nextHops})
}

// Withdraw removes a learned prefix.
func (f *Speaker) Withdraw(prefix netip.Prefix) { f.Learn(prefix) }

// Update applies a batch (empty next hops: withdrawn) and hands it, as one
// LearnedUpdate, to every subscriber.
func (f *Speaker) Update(routes map[netip.Prefix][]netip.Addr) {
	f.mu.Lock()
	batch := map[netip.Prefix][]netip.Addr{}
	for p, nhs := range routes {
		nhs = slices.Clone(nhs)
		slices.SortFunc(nhs, netip.Addr.Compare)
		if len(nhs) == 0 {
			if _, had := f.learned[p]; !had {
				continue
			}
			delete(f.learned, p)
			batch[p] = nil
			continue
		}
		f.learned[p] = nhs
		batch[p] = slices.Clone(nhs)
	}
	subs := slices.Clone(f.subs)
	f.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	for _, fn := range subs {
		fn(bgp.LearnedUpdate{Routes: cloneRoutes(batch)})
	}
}

// SetPeerStatus sets what PeerStatus returns.
func (f *Speaker) SetPeerStatus(st []bgp.PeerStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = slices.Clone(st)
}

// SetRIB sets what RIB returns.
func (f *Speaker) SetRIB(rib []bgp.RIBEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rib = slices.Clone(rib)
}

// FinishInitialSync closes InitialSyncDone (idempotent).
func (f *Speaker) FinishInitialSync() {
	f.syncOnce.Do(func() { close(f.syncDone) })
}

func cloneRoutes(m map[netip.Prefix][]netip.Addr) map[netip.Prefix][]netip.Addr {
	out := maps.Clone(m)
	for p, nhs := range out {
		out[p] = slices.Clone(nhs)
	}
	if out == nil {
		out = map[netip.Prefix][]netip.Addr{}
	}
	return out
}
