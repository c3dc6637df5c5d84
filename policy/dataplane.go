package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/heartbeat"
)

// Dataplane programs policy into the kernel. The owner sets the desired
// state in memory (setters never touch the kernel) and calls Apply, or runs
// Run, which applies after every change and repairs drift periodically.
//
// Call Apply (or start Run) only once the desired state is complete (the
// datastore is in sync): Apply makes the kernel match exactly what was set,
// so applying a half-loaded state would remove chains that are still needed.
type Dataplane struct {
	cfg     Config
	log     *slog.Logger
	k       kernel
	members memberWriter // nil: set members are written by ipset restore
	hooks   *hookWriter  // nil: hook rules are written by iptables-restore too
	kick    chan struct{}

	mu sync.Mutex // guards m
	m  *model

	applyMu sync.Mutex // one Apply at a time; guards have, tmpSeq and stats
	have    *haveState // nil: unknown, read the kernel before writing
	tmpSeq  int
	stats   Stats

	readyMu   sync.Mutex
	failures  int
	lastErr   error
	succeeded bool
}

// Stats counts what Apply wrote, for tests, benchmarks and metrics.
type Stats struct {
	Applies        int           // Apply calls that wrote something
	ChainsWritten  int           // chains (re)written, all tables and families
	ChainsDeleted  int           // chains deleted
	SetsWritten    int           // sets created or changed
	MembersChanged int           // set members added or removed
	NetlinkWrites  int           // applies whose set changes went over netlink, not ipset restore
	KernelReads    int           // full reads of the kernel state
	LastApply      time.Duration // duration of the last Apply that wrote
	// Restores counts iptables-restore runs by family and outcome.
	RestoresV4, RestoresV6 RestoreCounts
	// Sets and SetMembers are the cx- sets in the kernel and their members
	// after the last Apply that wrote (or read) them.
	Sets, SetMembers int
}

// RestoreCounts are iptables-restore runs that succeeded and failed.
type RestoreCounts struct{ OK, Failed int }

// New returns a Dataplane that runs the real commands (with
// cfg.CommandPrefix). Where it can tell which namespace the commands reach
// (see Config.NetNS) it writes set members over netlink and the hook rules
// in built-in chains with go-iptables, after checking the backend's
// iptables (found, version, mode); elsewhere iptables-restore writes them
// with the chains.
func New(cfg Config, log *slog.Logger) (*Dataplane, error) {
	d, err := newDataplane(cfg, log, ExecRunner{Prefix: cfg.CommandPrefix})
	if err != nil {
		return nil, err
	}
	if ns, ok := netlinkTarget(&d.cfg); ok {
		d.members = netlinkSets{nsPath: ns}
		if d.hooks, err = newHookWriter(ns, d.cfg.Backend, d.m.families, d.cfg.lockWait(), d.log); err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
	} else {
		d.log.Info("command prefix aims at an unknown namespace; set members are written by ipset restore")
	}
	return d, nil
}

// NewWithRunner is New with the command runner injected. Set members go
// over netlink only when cfg.NetNS names the namespace the runner reaches.
func NewWithRunner(cfg Config, log *slog.Logger, r Runner) (*Dataplane, error) {
	d, err := newDataplane(cfg, log, r)
	if err != nil {
		return nil, err
	}
	if cfg.NetNS != "" {
		d.members = netlinkSets{nsPath: cfg.NetNS}
	}
	return d, nil
}

func newDataplane(cfg Config, log *slog.Logger, r Runner) (*Dataplane, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("policy config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dataplane{
		cfg:  c,
		log:  log,
		k:    kernel{run: r, backend: c.Backend, lockWait: c.lockWait()},
		kick: make(chan struct{}, 1),
	}
	d.m = newModel(&d.cfg)
	return d, nil
}

// ---- desired state -------------------------------------------------------------

// SetPolicy adds or replaces a policy. An invalid policy is refused whole
// and the previous version, if any, stays in force.
func (d *Dataplane) SetPolicy(p *datastore.Policy) error {
	d.mu.Lock()
	err := d.m.setPolicy(p)
	d.mu.Unlock()
	d.poke()
	return err
}

// DeletePolicy removes a policy; unknown names are ignored.
func (d *Dataplane) DeletePolicy(name string) {
	d.mu.Lock()
	d.m.deletePolicy(name)
	d.mu.Unlock()
	d.poke()
}

// SetEndpoint adds or replaces a workload endpoint. It is local (gets
// chains) when Spec.Node is this node; every endpoint's addresses feed the
// selector sets.
func (d *Dataplane) SetEndpoint(w *datastore.WorkloadEndpoint) error {
	d.mu.Lock()
	err := d.m.setEndpoint(w)
	d.mu.Unlock()
	d.poke()
	return err
}

// SetProfile adds or replaces a Profile: the endpoints naming it inherit
// its labelsToApply.
func (d *Dataplane) SetProfile(p *datastore.Profile) {
	labels := p.Spec.LabelsToApply
	if labels == nil {
		labels = map[string]string{}
	}
	d.mu.Lock()
	d.m.setProfile(p.Metadata.Name, labels)
	d.mu.Unlock()
	d.poke()
}

// DeleteProfile removes a Profile; its endpoints keep their own labels.
func (d *Dataplane) DeleteProfile(name string) {
	d.mu.Lock()
	d.m.setProfile(name, nil)
	d.mu.Unlock()
	d.poke()
}

// DeleteEndpoint removes a workload endpoint; unknown names are ignored.
func (d *Dataplane) DeleteEndpoint(name string) {
	d.mu.Lock()
	d.m.deleteEndpoint(name)
	d.mu.Unlock()
	d.poke()
}

// SetPools replaces the IP pools (natOutgoing).
func (d *Dataplane) SetPools(pools []*datastore.IPPool) error {
	d.mu.Lock()
	err := d.m.setPools(pools)
	d.mu.Unlock()
	d.poke()
	return err
}

func (d *Dataplane) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// ---- readiness -------------------------------------------------------------------

// Ready is nil once the desired state has been written at least once and
// as long as fewer than MaxFailures writes in a row failed. While it
// reports an error, traffic stays as restricted as the last good write (and
// unknown workload interfaces are dropped): failures never open anything.
func (d *Dataplane) Ready() error {
	d.readyMu.Lock()
	defer d.readyMu.Unlock()
	switch {
	case d.failures >= d.cfg.MaxFailures:
		return fmt.Errorf("policy: %d writes in a row failed, last: %w", d.failures, d.lastErr)
	case !d.succeeded:
		if d.lastErr != nil {
			return fmt.Errorf("policy: not programmed yet: %w", d.lastErr)
		}
		return errors.New("policy: not programmed yet")
	}
	return nil
}

func (d *Dataplane) record(err error) {
	d.readyMu.Lock()
	defer d.readyMu.Unlock()
	if err != nil {
		d.failures++
		d.lastErr = err
		return
	}
	d.failures, d.lastErr, d.succeeded = 0, nil, true
}

// Stats returns the counters so far.
func (d *Dataplane) Stats() Stats {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	return d.stats
}

// ---- loop ------------------------------------------------------------------------

// Run applies the desired state now and after every change, re-reads the
// kernel every ResyncInterval to repair drift, and retries failed writes
// with backoff. It returns when ctx ends.
func (d *Dataplane) Run(ctx context.Context) error {
	resync := time.NewTicker(d.cfg.ResyncInterval)
	defer resync.Stop()
	backoff := time.Duration(0)
	for {
		err := d.Apply(ctx)
		// At least once per resync: the owner's stall detection.
		heartbeat.Beat(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
			d.log.Warn("policy write failed; will retry", "err", err, "retry_in", backoff)
		} else {
			backoff = 0
		}
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.kick:
		case <-retry:
		case <-resync.C:
			if err := d.Resync(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("policy resync failed", "err", err)
			}
		}
	}
}
