package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"time"

	"github.com/calyx-net/calyx/bgp"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/heartbeat"
)

// onSyncerEvents folds a batch of datastore changes into the state, feeds
// the policy dataplane (its setters only touch memory) and wakes the
// dataplane loop.
func (a *Agent) onSyncerEvents(evs []datastore.Event) {
	for i := range evs {
		evs[i] = withPrev(evs[i])
	}
	a.metrics.datastoreEvents(evs)
	var ch changes
	var pools []*datastore.IPPool
	a.mu.Lock()
	for _, ev := range evs {
		a.state.apply(ev, &ch)
		a.confirmOverlay(ev)
		a.feedPolicy(ev)
	}
	if ch.policy {
		for _, p := range a.state.pools {
			pools = append(pools, p)
		}
	}
	a.mu.Unlock()
	if ch.policy {
		err := a.policy.SetPools(pools)
		if err != nil {
			a.log.Error("policy: pools refused; the previous ones stay in force", "err", err)
		}
		a.mu.Lock()
		a.refusePolicyInputLocked(datastore.KindIPPool, "*", err)
		a.mu.Unlock()
	}
	if ch.inSync && !a.isSynced() {
		a.log.Info("datastore in sync", "revision", evs[len(evs)-1].Revision)
		close(a.synced)
	}
	if ch.any() {
		a.poke()
	}
}

// confirmOverlay drops CNI-made overlay entries once the syncer reports
// the same change from etcd.
func (a *Agent) confirmOverlay(ev datastore.Event) {
	w, ok := ev.Value.(*datastore.WorkloadEndpoint)
	if ev.Type == datastore.EventDelete {
		w, ok = ev.Prev.(*datastore.WorkloadEndpoint)
		if ok {
			delete(a.pendingDel, w.Metadata.Name)
		}
		return
	}
	if ok {
		delete(a.pendingAdd, w.Metadata.Name)
	}
}

func (a *Agent) feedPolicy(ev datastore.Event) {
	switch ev.Type {
	case datastore.EventAdd, datastore.EventUpdate:
		switch v := ev.Value.(type) {
		case *datastore.WorkloadEndpoint:
			if !a.pendingDel[v.Metadata.Name] {
				a.setPolicyEndpoint(v)
			}
		case *datastore.Policy:
			err := a.policy.SetPolicy(v)
			if err != nil {
				a.log.Error("policy refused; the previous version stays in force", "policy", v.Metadata.Name, "err", err)
			}
			a.refusePolicyInputLocked(datastore.KindPolicy, v.Metadata.Name, err)
		case *datastore.Profile:
			a.policy.SetProfile(v)
		}
	case datastore.EventDelete:
		switch v := ev.Prev.(type) {
		case *datastore.WorkloadEndpoint:
			if a.pendingAdd[v.Metadata.Name] == nil {
				a.policy.DeleteEndpoint(v.Metadata.Name)
			}
			a.refusePolicyInputLocked(datastore.KindWorkloadEndpoint, v.Metadata.Name, nil)
		case *datastore.Policy:
			a.policy.DeletePolicy(v.Metadata.Name)
			a.refusePolicyInputLocked(datastore.KindPolicy, v.Metadata.Name, nil)
		case *datastore.Profile:
			a.policy.DeleteProfile(v.Metadata.Name)
		}
	}
}

// setPolicyEndpoint hands the policy dataplane an endpoint from etcd.
// Called with a.mu held.
func (a *Agent) setPolicyEndpoint(w *datastore.WorkloadEndpoint) {
	err := a.policy.SetEndpoint(w)
	if err != nil {
		a.log.Error("policy: endpoint refused; its previous version stays in force", "endpoint", w.Metadata.Name, "err", err)
	}
	a.refusePolicyInputLocked(datastore.KindWorkloadEndpoint, w.Metadata.Name, err)
}

func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// localEndpointsLocked is this node's endpoints: those in etcd, plus the
// ones a CNI ADD is writing, minus the ones a CNI DEL removed.
func (a *Agent) localEndpointsLocked() map[string]*datastore.WorkloadEndpoint {
	out := map[string]*datastore.WorkloadEndpoint{}
	for name, w := range a.state.endpoints {
		if w.Spec.Node == a.node && !a.pendingDel[name] {
			out[name] = w
		}
	}
	for name, w := range a.pendingAdd {
		out[name] = w
	}
	return out
}

// dataplaneLoop waits for the first datastore in-sync (so that a restarted
// agent never removes what it is about to recreate), programs the
// dataplane once, then keeps it following the state.
func (a *Agent) dataplaneLoop(ctx context.Context) error {
	beat := time.NewTicker(min(dataplaneBeat, a.opts.dataplaneStall/4))
	defer beat.Stop()
	a.notify.setStatus("waiting for the datastore to be in sync")
	for synced := false; !synced; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-beat.C:
			heartbeat.Beat(ctx)
		case <-a.synced:
			synced = true
		}
	}
	a.notify.setStatus("programming the dataplane")
	a.recompute(ctx)
	start := time.Now()
	if err := a.local.Apply(ctx); err != nil {
		a.log.Error("programming workload routes", "err", err)
	}
	if err := a.sysctls.Apply(ctx); err != nil {
		a.log.Error("programming sysctls", "err", err)
	}
	a.log.Info("dataplane programmed from the datastore", "took", time.Since(start).Round(time.Millisecond))
	// Routes learned before a restart stay until the peers have sent
	// theirs again (graceful restart); new ones are installed at once.
	if kept, err := a.learned.KernelGateways(); err != nil {
		a.log.Error("reading routes learned before the restart", "err", err)
	} else {
		a.mu.Lock()
		a.keptLearned = kept
		a.learnedSync.markAll(kept)
		a.mu.Unlock()
		if len(kept) > 0 {
			a.log.Info("keeping routes learned before the restart until BGP has re-synced", "routes", len(kept))
		}
	}
	a.recompute(ctx)
	if err := a.learned.Apply(ctx); err != nil {
		a.log.Error("programming learned routes", "err", err)
	}
	// Policy's first programming, before its loop takes over (which
	// retries a failure): READY=1 comes after it.
	if err := a.policy.Apply(ctx); err != nil {
		a.log.Error("programming policy", "err", err)
	}
	stall := partStall(a.cfg.ResyncInterval)
	a.group.Go("workload routes", stall, a.local.Run)
	a.group.Go("learned routes", stall, a.learned.Run)
	a.group.Go("sysctls", stall, a.sysctls.Run)
	a.group.Go("policy", stall, a.policy.Run)

	a.mu.Lock()
	learnedKick := a.learnedSync.wakeChan()
	a.mu.Unlock()
	grDone := a.startBGP(ctx)
	a.notify.ready(a.readyStatus())
	// The first list and programming are the agent's largest burst of
	// garbage (in a large cluster: every endpoint's key and value, decoded,
	// of which the agent keeps a fraction); an idle agent would hold it
	// until the runtime's scavenger gives it back, minutes later.
	debug.FreeOSMemory()
	a.log.Info("ready: the dataplane is programmed", "took", time.Since(start).Round(time.Millisecond))
	reconcile := time.NewTicker(a.cfg.ResyncInterval)
	defer reconcile.Stop()
	release := newBurstRelease()
	defer release.stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.kick:
			a.recompute(ctx)
		case <-learnedKick:
			release.note(a.handOverLearned())
		case <-release.C():
			release.fire()
		case <-grDone:
			grDone = nil
			a.sweepKeptLearned(ctx)
		case <-reconcile.C:
			a.reconcileLearned(ctx)
		case <-beat.C:
			if a.opts.beatHook != nil {
				a.opts.beatHook(ctx)
			}
			heartbeat.Beat(ctx)
		}
	}
}

// readyStatus is the STATUS= line of a running agent.
func (a *Agent) readyStatus() string {
	a.mu.Lock()
	n := len(a.localEndpointsLocked())
	bgp := "BGP speaker running"
	if !a.bgpStarted {
		bgp = "BGP speaker not started"
	}
	a.mu.Unlock()
	return fmt.Sprintf("ready: %d local endpoints, %s", n, bgp)
}

// recompute derives every part's desired state from the cluster state and
// hands it over. Parts diff against what they have, so repeating it with an
// unchanged state changes nothing.
func (a *Agent) recompute(ctx context.Context) {
	a.mu.Lock()
	local := a.localEndpointsLocked()
	localRoutes := desiredLocalRoutes(a.node, local, a.state.blocks)
	desiredBGP := a.desiredBGPLocked(local)
	learned := a.learnedSync.handover(a.learnedPaths, a.keptLearned, localRoutes, []netip.Addr{a.nodeIP, a.nodeIP6})
	started := a.bgpStarted
	a.metrics.localEndpoints.Set(float64(len(local)))
	a.mu.Unlock()

	if err := a.local.SetRoutes(localRoutes); err != nil {
		a.log.Error("workload routes refused", "err", err)
	}
	if !learned.empty() {
		if err := learned.apply(a.learned); err != nil {
			a.log.Error("learned routes refused", "err", err)
		}
	}
	if started {
		a.applyBGP(ctx, desiredBGP)
	}
}

func (a *Agent) selfNodeLocked() *datastore.Node {
	if n := a.state.nodes[a.node]; n != nil {
		return n
	}
	// Our Node was deleted from etcd under us: keep peering as registered.
	n := &datastore.Node{Metadata: datastore.Metadata{Name: a.node}}
	n.Spec.Address = a.nodeIP.String()
	if a.nodeIP6.IsValid() {
		n.Spec.IPv6Address = a.nodeIP6.String()
	}
	return n
}

func (a *Agent) nodeListLocked() []*datastore.Node {
	out := make([]*datastore.Node, 0, len(a.state.nodes))
	for _, n := range a.state.nodes {
		out = append(out, n)
	}
	return out
}

func (a *Agent) peerListLocked() []*datastore.BGPPeer {
	out := make([]*datastore.BGPPeer, 0, len(a.state.peers))
	for _, p := range a.state.peers {
		out = append(out, p)
	}
	return out
}

// startBGP starts the speaker from the synced configuration and returns
// the channel that says when the learned routes may be programmed (after
// End-of-RIB from the peers, so routes kept over a restart are swept only
// once the peers have re-sent theirs).
func (a *Agent) startBGP(ctx context.Context) <-chan struct{} {
	a.mu.Lock()
	g, err := bgp.GlobalFor(a.selfNodeLocked(), a.state.bgpSpec(), a.cfg.BGPPort)
	a.mu.Unlock()
	if err == nil {
		err = a.speaker.Start(ctx, g)
	}
	if err != nil {
		a.log.Error("BGP speaker did not start; workloads on this node are reachable only from it", "err", err)
		return nil
	}
	a.speaker.Subscribe(a.onLearned)
	a.mu.Lock()
	a.bgpStarted = true
	a.mu.Unlock()
	a.log.Info("BGP speaker started", "as", g.ASN, "router_id", g.RouterID, "port", g.ListenPort, "graceful_restart", g.GracefulRestart.Enabled)
	a.recompute(ctx)
	return a.speaker.InitialSyncDone()
}

// onLearned merges a batch of best-path changes and marks the prefixes
// that changed, for the dataplane loop to hand over alone; the speaker
// calls it from its own goroutine.
func (a *Agent) onLearned(u bgp.LearnedUpdate) {
	if a.log.Enabled(context.Background(), slog.LevelDebug) {
		a.log.Debug("learned routes changed", "count", len(u.Routes), "routes", fmt.Sprint(u.Routes))
	}
	a.mu.Lock()
	a.learnedSync.mergeLearned(a.learnedPaths, u)
	wake := a.learnedSync.wakeChan()
	a.mu.Unlock()
	select {
	case wake <- struct{}{}:
	default:
	}
}

// sweepKeptLearned ends the keeping of the routes learned before a
// restart, once BGP's initial sync is done: those not learned again go.
// What is learned again is read from the RIB itself, not taken from the
// subscription alone: the last routes a peer sent before its End-of-RIB
// may still be on their way through it, and sweeping those would delete
// live routes for a moment.
func (a *Agent) sweepKeptLearned(ctx context.Context) {
	paths, err := a.readRIB(ctx)
	if err != nil {
		a.log.Warn("reading the BGP RIB for the sweep; using the routes delivered so far", "err", err)
	}
	a.mu.Lock()
	if err == nil {
		a.learnedSync.endRIBRead(a.learnedPaths, paths)
		a.learnedPaths = newLearnedPaths(paths)
	}
	stale := 0
	for p := range a.keptLearned {
		if !a.learnedPaths.Has(p) {
			stale++
		}
	}
	a.learnedSync.markAll(a.keptLearned)
	a.keptLearned = nil
	a.mu.Unlock()
	a.recompute(ctx)
	a.log.Info("BGP initial sync done: routes not learned again are swept", "stale", stale)
}

// readRIB reads the speaker's best paths, recording what the subscription
// delivers meanwhile (see learnedSync.endRIBRead); on success the caller
// ends the read with endRIBRead under a.mu.
func (a *Agent) readRIB(ctx context.Context) (map[netip.Prefix][]netip.Addr, error) {
	a.mu.Lock()
	a.learnedSync.beginRIBRead()
	a.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	paths, err := a.speaker.Learned(rctx)
	if err != nil {
		a.mu.Lock()
		a.learnedSync.abortRIBRead()
		a.mu.Unlock()
	}
	return paths, err
}

// handOverLearned gives the learned-route table the routes of the prefixes
// whose paths changed, and nothing else: the node's own routes, which
// learned ones never override, are as the last recompute found them (any
// change to them comes with a recompute of its own). It returns how many
// routes it handed over.
func (a *Agent) handOverLearned() int {
	a.mu.Lock()
	h := a.learnedSync.handoverMarked(a.learnedPaths, a.keptLearned)
	a.mu.Unlock()
	if h.empty() {
		return 0
	}
	if err := h.apply(a.learned); err != nil {
		a.log.Error("learned routes refused", "err", err)
	}
	return len(h.routes) + len(h.deletes)
}

// reconcileLearned replaces the learned paths with a fresh read of the RIB,
// so that a missed event can never leave a stale route in the kernel.
func (a *Agent) reconcileLearned(ctx context.Context) {
	a.mu.Lock()
	started := a.bgpStarted
	a.mu.Unlock()
	if !started {
		return
	}
	paths, err := a.readRIB(ctx)
	if err != nil {
		a.log.Warn("reading the BGP RIB for reconcile", "err", err)
		return
	}
	a.mu.Lock()
	changed := a.learnedSync.endRIBRead(a.learnedPaths, paths)
	a.learnedPaths = newLearnedPaths(paths)
	// Hand the whole set over now and then, so that no slip of the
	// incremental bookkeeping can outlive a reconcile.
	a.learnedSync.forget()
	a.mu.Unlock()
	if changed {
		a.log.Info("learned routes differed from the RIB; reconciled")
	}
	a.poke()
}
