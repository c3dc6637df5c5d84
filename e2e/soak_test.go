package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestSoak: under continuous churn nothing leaks and nothing breaks.
//
// 3 hosts and a BIRD ToR. A churn loop adds and deletes workloads on random
// hosts with random labels at a steady rate, a bounded number alive, while
// long-lived workloads ping each other across hosts all the time (every
// lost echo counted). Now and then an agent restarts (SIGTERM, then start),
// once an agent is killed with SIGKILL in the middle of a CNI ADD, and a
// policy that selects some churned workloads is applied and deleted. The
// agents' IPAM garbage collector and full resync run on short periods, so
// they race the churn too.
//
// Periodically (the churn paused) and at the end, every host's cx links,
// proto-201 routes and blackholes, proto-202 routes into the pool, cx-fw /
// cx-tw chains, the policy's chains and ipset members, the WorkloadEndpoints
// in etcd, the IPAM's addresses and handles and `calyxctl ipam check` must
// match the live workloads exactly. At the end, once every churned workload
// is deleted, each host must hold what it held before the churn. Agent RSS
// and goroutines must not double after warm-up. A summary table is logged.
//
// Only with CALYX_SOAK=1 (`make soak`); CALYX_SOAK_DURATION (default 10m),
// CALYX_SOAK_RATE, CALYX_SOAK_MAX_ALIVE and CALYX_SOAK_SEED shape the run.
func TestSoak(t *testing.T) {
	if os.Getenv("CALYX_SOAK") != "1" {
		t.Skip("soak test: set CALYX_SOAK=1 (make soak); CALYX_SOAK_DURATION sets its length (default 10m)")
	}
	cfg, err := soakConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	// Set-up, the end's GC wait and the teardown take a few minutes more.
	if dl, ok := t.Deadline(); ok && time.Until(dl) < cfg.Duration+5*time.Minute {
		t.Fatalf("the test timeout ends in %s, too soon for a %s soak: run with -timeout %s (make soak uses 2h)",
			time.Until(dl).Round(time.Second), cfg.Duration, (cfg.Duration + 10*time.Minute).Round(time.Minute))
	}
	t.Logf("soak: %s, seed %d (CALYX_SOAK_SEED=%d replays the same choices), %.1f ops/s, at most %d churned alive",
		cfg.Duration, cfg.Seed, cfg.Seed, cfg.Rate, cfg.MaxChurned)
	l := soakUpLab(t, lab.Options{Hosts: 3, Peer: lab.PeerBird, AgentLogLevel: "info", AgentArgs: cfg.agentArgs()})
	waitEstablished(t, l)

	s := &soak{t: t, l: l, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 1)), fleet: newSoakFleet()}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+20*time.Minute)
	defer cancel()
	s.setUp(ctx)
	s.run(ctx)
	s.finish(ctx)
	t.Log("\n" + s.report())
	for _, v := range s.violations {
		t.Error(v)
	}
}

// soakUpLab is upLab with the lab's own log at warnings only: the churn
// adds thousands of workloads, each of which the lab logs at info.
func soakUpLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	requireLab(t, o)
	o.Dir = t.TempDir()
	o.BinDir = binDir(t)
	o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, o)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, l)
		}
		l.Down()
		if t.Failed() {
			soakKeepLogs(t, l)
		}
	})
	return l
}

// soakKeepLogs copies the lab's logs (agents, etcd, BIRD) out of the test's
// temporary directory, which is removed after the test: a soak failure is
// worth reading in full.
func soakKeepLogs(t *testing.T, l *lab.Lab) {
	dst, err := os.MkdirTemp("", "calyx-soak-logs-")
	if err != nil {
		t.Logf("keeping the logs: %v", err)
		return
	}
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(l.Dir(), "logs"))); err != nil {
		t.Logf("keeping the logs: %v", err)
		return
	}
	t.Logf("the lab's logs are kept in %s", dst)
}

// soak is one run: the lab, what should exist, and what was measured.
type soak struct {
	t     *testing.T
	l     *lab.Lab
	cfg   soakConfig
	rng   *rand.Rand // the controller's; the churn has its own
	start time.Time

	fleet   *soakFleet
	churn   *soakChurn
	sampler *soakSampler
	nl      soakNetlink
	tl      *soakTimeline
	pings   []*soakPing

	stopChurn, stopSampler context.CancelFunc
	samplerDone            chan struct{}

	policyOn bool

	mu         sync.Mutex
	violations []string
	checks     []soakCheckRecord
	agentOps   []soakAgentOp
	policyOps  []soakPolicyOp
	baseline   soakCheckOutcome
	final      soakCheckOutcome
	gcWait     time.Duration // how long the end waited for the GC
	leakedSeen map[string]bool
	crash      string // what the SIGKILL in the middle of an ADD did
	pingRes    []soakPingResult
	gcRuns     int      // CNI GC rounds (every host each)
	revs       [2]int64 // etcd revision when the churn starts and stops
	// routeWatches hold every route event of each host (kernel_routes_test.go).
	routeWatches map[string]*routeWatch
}

type soakCheckRecord struct {
	at       time.Duration // since the start
	converge time.Duration
	ok       bool
	alive    int
	leaked   int
}

func (s *soak) violationCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.violations)
}

func (s *soak) violate(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	s.violations = append(s.violations, msg)
	if s.tl != nil {
		s.tl.add("VIOLATION: " + msg)
	}
}

// tolerate is how old a leaked allocation may be before the GC must have
// released it.
func (s *soak) tolerate() time.Duration { return s.cfg.GCGrace + s.cfg.GCInterval + 15*time.Second }

// setUp adds the long-lived workloads, starts their pings, takes the
// baseline and starts the churn and the sampler.
func (s *soak) setUp(ctx context.Context) {
	t := s.t
	s.tl = &soakTimeline{start: time.Now()}
	s.leakedSeen = map[string]bool{}
	addLong := func(name, host, kind string, labels map[string]string) soakWL {
		w, err := s.l.AddWorkload(ctx, name, host, labels)
		if err != nil {
			t.Fatalf("adding long-lived workload %s: %v", name, err)
		}
		sw := soakFromLab(w, kind)
		s.fleet.add(sw)
		return sw
	}
	var probes []soakWL
	for _, h := range s.l.Hosts() {
		for i := 1; i <= 2; i++ {
			probes = append(probes, addLong(fmt.Sprintf("ll-h%d-%d", h.Index, i), h.Name, soakProbe, map[string]string{"soak": "probe"}))
		}
	}
	addLong("sent-a", "host3", soakSentinel, map[string]string{"soak": "sentinel", "soak-app": "a"})
	addLong("sent-b", "host2", soakSentinel, map[string]string{"soak": "sentinel", "soak-app": "b"})

	for _, a := range probes {
		for _, b := range probes {
			if a.Host == b.Host {
				continue
			}
			testutil.Eventually(t, 30*time.Second, a.Name+" reaches "+b.Name, func() error { return s.l.Ping(a.Name, b.IP) })
			ns, err := s.l.Namespace(a.Name)
			if err != nil {
				t.Fatal(err)
			}
			p, err := startSoakPing(ns, a.Name, b.Name, b.IP)
			if err != nil {
				t.Fatal(err)
			}
			s.pings = append(s.pings, p)
		}
	}
	// The ToR reaches one long-lived workload per host through the routes
	// BIRD learned: a restarting agent must not make BIRD drop them.
	torNS, err := s.l.Namespace("tor")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range probes {
		if !strings.HasSuffix(b.Name, "-1") {
			continue
		}
		testutil.Eventually(t, 30*time.Second, "the ToR reaches "+b.Name, func() error { return s.l.Ping("tor", b.IP) })
		p, err := startSoakPing(torNS, "tor", b.Name, b.IP)
		if err != nil {
			t.Fatal(err)
		}
		s.pings = append(s.pings, p)
	}
	t.Cleanup(func() {
		for _, p := range s.pings {
			p.stop()
		}
	})

	if s.nl, err = openSoakNetlink(s.l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.nl.close)
	base, took := s.converge(ctx, false, 0)
	if len(base.Problems) > 0 {
		t.Fatalf("before the churn, after %s, the invariants do not hold:\n%s", took.Round(time.Millisecond), soakLines(base.Problems))
	}
	s.baseline = base
	// Kernel route events on every host: during restarts no host may lose
	// the route to another host's block, nor a long-lived workload's /32.
	s.routeWatches = map[string]*routeWatch{}
	for _, h := range s.l.Hosts() {
		s.routeWatches[h.Name] = watchRoutes(t, s.l, h.Name)
	}

	s.sampler = newSoakSampler(s.l)
	sctx, scancel := context.WithCancel(ctx)
	s.stopSampler, s.samplerDone = scancel, make(chan struct{})
	go func() { defer close(s.samplerDone); s.sampler.run(sctx, s.cfg.SampleEvery) }()

	s.revs[0] = s.etcdRevision(ctx)
	s.churn = &soakChurn{
		l: s.l, fleet: s.fleet, rng: rand.New(rand.NewPCG(s.cfg.Seed, 2)), rate: s.cfg.Rate, max: s.cfg.MaxChurned,
		cacheDir: t.TempDir(), tl: s.tl, pauseCh: make(chan soakPause), done: make(chan struct{}),
	}
	cctx, ccancel := context.WithCancel(ctx)
	s.stopChurn = ccancel
	s.start = time.Now()
	s.tl.start = s.start
	s.tl.add("churn starts")
	go s.churn.run(cctx)
	t.Cleanup(func() { ccancel(); <-s.churn.done; scancel(); <-s.samplerDone })
}

// run drives the soak until its duration is up: checks, policy toggles
// and agent restarts, one at a time, while the churn and the pings go on.
func (s *soak) run(ctx context.Context) {
	end := s.start.Add(s.cfg.Duration)
	nextCheck := s.start.Add(s.cfg.CheckEvery)
	nextPolicy := s.start.Add(s.cfg.PolicyEvery)
	chaos := s.chaosPlan()
	for ctx.Err() == nil {
		next, what := end, "end"
		if nextCheck.Before(next) {
			next, what = nextCheck, "check"
		}
		if nextPolicy.Before(next) {
			next, what = nextPolicy, "policy"
		}
		if len(chaos) > 0 && chaos[0].at.Before(next) {
			next, what = chaos[0].at, "chaos"
		}
		time.Sleep(time.Until(next))
		switch what {
		case "end":
			return
		case "check":
			s.periodicCheck(ctx)
			nextCheck = time.Now().Add(s.cfg.CheckEvery)
		case "policy":
			s.togglePolicy(ctx)
			nextPolicy = time.Now().Add(s.cfg.PolicyEvery)
		case "chaos":
			ev := chaos[0]
			chaos = chaos[1:]
			if ev.kill {
				s.crashAgent(ctx, ev.host)
			} else {
				s.restartAgent(ctx, ev.host)
			}
		}
		if s.violationCount() > 50 {
			s.violate("more than 50 violations: the soak stops early")
			return
		}
	}
}

// periodicCheck pauses the churn, pays the DELs owed and checks.
func (s *soak) periodicCheck(ctx context.Context) {
	s.churn.paused(func() {
		for _, f := range s.churn.payAllDebts(ctx) {
			s.violate("%s", f)
		}
		s.runtimeGC(ctx)
		o, took := s.converge(ctx, s.policyOn, s.tolerate())
		s.record(o, took)
	})
}

// etcdRevision is the etcd cluster's revision (0 when unreadable).
func (s *soak) etcdRevision(ctx context.Context) int64 {
	ds, err := s.l.Datastore()
	if err != nil {
		return 0
	}
	r, err := ds.Etcd().Get(ctx, "/calyx/v1/", clientv3.WithCountOnly())
	if err != nil {
		return 0
	}
	return r.Header.Revision
}

// runtimeGC runs CNI GC on every host, the churn holding still (a runtime
// never lists an attachment whose ADD is still running as invalid).
func (s *soak) runtimeGC(ctx context.Context) {
	live := s.fleet.snapshot()
	for _, h := range s.l.Hosts() {
		gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := soakCNIGC(gctx, s.l, s.churn.cacheDir, h.Name, live)
		cancel()
		if err != nil {
			s.violate("CNI GC on %s: %v", h.Name, err)
		}
	}
	s.mu.Lock()
	s.gcRuns++
	s.mu.Unlock()
}

func (s *soak) record(o soakCheckOutcome, took time.Duration) {
	rec := soakCheckRecord{at: o.At.Sub(s.start), converge: took, ok: len(o.Problems) == 0,
		alive: s.fleet.count(soakChurned), leaked: len(o.Leaked)}
	s.mu.Lock()
	s.checks = append(s.checks, rec)
	for _, lk := range o.Leaked {
		s.leakedSeen[lk[:min(len(lk), 80)]] = true
	}
	s.mu.Unlock()
	if !rec.ok {
		s.violate("check at +%s did not converge in %s:\n%s", rec.at.Round(time.Second), took.Round(time.Millisecond), soakLines(o.Problems))
	} else {
		s.tl.add(fmt.Sprintf("check ok (%d churned alive, converged in %s, %d leaked allocation(s) within grace)", rec.alive, took.Round(time.Millisecond), rec.leaked))
	}
}

func soakLines(ps []string) string {
	out := ""
	for _, p := range ps {
		out += "    " + p + "\n"
	}
	return out
}
