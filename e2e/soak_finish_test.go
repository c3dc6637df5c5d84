package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// finish stops the churn, deletes what it left, waits for the IPAM
// garbage collector, runs the final checks and collects the pings.
func (s *soak) finish(ctx context.Context) {
	s.stopChurn()
	<-s.churn.done
	s.tl.add("churn stops")
	s.revs[1] = s.etcdRevision(ctx)
	if s.policyOn {
		s.togglePolicy(ctx) // deletes it
	}
	for _, f := range s.churn.payAllDebts(ctx) {
		s.violate("%s", f)
	}
	s.runtimeGC(ctx)
	o, took := s.converge(ctx, false, s.tolerate())
	s.record(o, took)

	// Delete every churned workload: the hosts must end as they began.
	for _, w := range s.fleet.snapshot() {
		if w.Kind != soakChurned {
			continue
		}
		if err := s.l.DelWorkload(ctx, w.Name); err != nil {
			s.violate("final DEL of %s on %s: %v", w.Name, w.Host, err)
			continue
		}
		s.fleet.remove(w.Name)
	}
	s.tl.add("churned workloads deleted")

	// Allocations leaked by the crash, and blocks emptied by the churn,
	// are the GC's: wait for them, at most its grace and interval.
	t0 := time.Now()
	for {
		o := s.check(ctx, false, s.tolerate())
		if len(o.Problems) == 0 && len(o.Leaked) == 0 && o.Cluster == s.baseline.Cluster {
			break
		}
		if time.Since(t0) > s.tolerate()+30*time.Second || ctx.Err() != nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	s.gcWait = time.Since(t0)
	s.tl.add("GC wait over")

	// No tolerance now: anything left over is a leak.
	s.final, took = s.converge(ctx, false, 0)
	if len(s.final.Problems) > 0 {
		s.violate("final check (after %s of GC wait, converging for %s):\n%s", s.gcWait.Round(time.Second), took.Round(time.Millisecond), soakLines(s.final.Problems))
	}
	for host, before := range s.baseline.Counts {
		if after := s.final.Counts[host]; after != before {
			s.violate("%s does not hold what it held before the churn:\n    before %s\n    after  %s", host, before, after)
		}
	}
	if s.final.Cluster != s.baseline.Cluster {
		s.violate("etcd does not hold what it held before the churn: before %+v, after %+v", s.baseline.Cluster, s.final.Cluster)
	}

	for _, p := range s.pings {
		early := !p.running()
		p.stop()
		r := p.result(early)
		s.pingRes = append(s.pingRes, r)
		if early {
			s.violate("ping %s -> %s exited before the end", r.From, r.To)
		}
	}
	for _, tor := range []bool{false, true} {
		sent, lost := s.pingTotals(tor)
		if sent == 0 || float64(lost) >= 0.001*float64(sent) {
			s.violate("%s lost %d of %d echoes (%.4f%%; the limit is 0.1%%)", map[bool]string{false: "long-lived workloads", true: "the ToR"}[tor],
				lost, sent, 100*float64(lost)/float64(max(sent, 1)))
		}
	}

	s.checkRouteEvents()

	s.stopSampler()
	<-s.samplerDone
	s.sampler.sampleAll(ctx)
	for _, g := range s.growth() {
		if !g.evaluated || !strings.HasPrefix(g.name, "agent-") {
			continue
		}
		if g.to.RSS > 2*g.from.RSS {
			s.violate("%s (pid %d): RSS grew from %s to %s in %s after warm-up", g.name, g.pid, soakMiB(g.from.RSS), soakMiB(g.to.RSS), g.span.Round(time.Second))
		}
		if g.from.Goroutines > 0 && g.to.Goroutines > 2*g.from.Goroutines {
			s.violate("%s (pid %d): goroutines grew from %.0f to %.0f in %s after warm-up", g.name, g.pid, g.from.Goroutines, g.to.Goroutines, g.span.Round(time.Second))
		}
	}
	if m := s.churn.snapshotStats().IDMismatch; m != "" {
		s.violate("%s", m)
	}
	st := s.churn.snapshotStats()
	if st.AddFailed > 0 || st.DelFailed > 0 {
		s.violate("unexpected CNI failures with every agent up: %d ADD, %d DEL; first ones:\n%s", st.AddFailed, st.DelFailed, soakLines(st.Errors))
	}
}

// pingTotals adds up the pairs between workloads, or those from the ToR.
func (s *soak) pingTotals(fromTor bool) (sent, lost int) {
	for _, r := range s.pingRes {
		if (r.From == "tor") != fromTor {
			continue
		}
		sent += r.Sent
		lost += r.Lost
	}
	return sent, lost
}

// soakGrowth compares one process's first sample after warm-up with its
// last.
type soakGrowth struct {
	name      string
	pid       int
	first     soakSample // the very first sample of the process
	from, to  soakSample
	span      time.Duration
	evaluated bool // at least a minute of samples after warm-up
}

// growth is per process lifetime (a restarted agent is a new process):
// samples count after the run's warm-up and after the process's own first
// 30 s.
func (s *soak) growth() []soakGrowth {
	s.sampler.mu.Lock()
	defer s.sampler.mu.Unlock()
	var out []soakGrowth
	names := make([]string, 0, len(s.sampler.samples))
	for n := range s.sampler.samples {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		byPID := map[int][]soakSample{}
		var pids []int
		for _, smp := range s.sampler.samples[name] {
			if _, ok := byPID[smp.PID]; !ok {
				pids = append(pids, smp.PID)
			}
			byPID[smp.PID] = append(byPID[smp.PID], smp)
		}
		for _, pid := range pids {
			all := byPID[pid]
			g := soakGrowth{name: name, pid: pid, first: all[0], from: all[0], to: all[len(all)-1]}
			var warm []soakSample
			for _, smp := range all {
				if smp.At.Sub(s.start) >= s.cfg.Warmup && smp.At.Sub(all[0].At) >= 30*time.Second {
					warm = append(warm, smp)
				}
			}
			if len(warm) >= 2 {
				g.from, g.to = warm[0], warm[len(warm)-1]
				g.span = g.to.At.Sub(g.from.At)
				g.evaluated = g.span >= time.Minute
			}
			out = append(out, g)
		}
	}
	return out
}

// checkRouteEvents: the blocks never moved during the soak (the long-lived
// workloads keep them), so no host may have lost the route to another
// host's block, nor the /32 of a long-lived workload, even for a moment.
func (s *soak) checkRouteEvents() {
	for _, h := range s.l.Hosts() {
		w := s.routeWatches[h.Name]
		if err := w.err(); err != nil {
			s.violate("%v: route deletions may have been missed", err)
		}
		var gone []string
		for b, owner := range s.baseline.BlockOwner {
			if owner == h.Name || owner == "" {
				continue
			}
			for _, e := range w.deletions(b) {
				gone = append(gone, fmt.Sprintf("%s at +%s (%s)", describeRoute(&e.Route), s.tl.offset(e.At), s.tl.near(e.At, 15*time.Second)))
			}
		}
		for _, wl := range s.fleet.snapshot() {
			if wl.Host != h.Name || wl.Kind == soakChurned {
				continue
			}
			for _, e := range w.deletions(netip.PrefixFrom(netip.MustParseAddr(wl.IP), 32)) {
				gone = append(gone, fmt.Sprintf("%s of %s at +%s (%s)", describeRoute(&e.Route), wl.Name, s.tl.offset(e.At), s.tl.near(e.At, 15*time.Second)))
			}
		}
		if len(gone) > 0 {
			s.violate("%s deleted routes it should have kept (another host's block, a long-lived workload): %s", h.Name, soakList(gone))
		}
	}
}
