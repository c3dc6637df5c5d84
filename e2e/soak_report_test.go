package e2e

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

func soakMiB(b int64) string {
	if b < 1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// report is the summary table the soak logs at the end.
func (s *soak) report() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(w, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	st := s.churn.snapshotStats()
	elapsed := s.cfg.Duration
	busy := s.tl.busyIntervals()

	fmt.Fprintf(&b, "==== calyx soak: 3 hosts + BIRD ToR, %s, seed %d ====\n", s.cfg.Duration, s.cfg.Seed)
	row("verdict", "%s", map[bool]string{true: "PASS", false: fmt.Sprintf("FAIL (%d violations, listed below)", len(s.violations))}[len(s.violations) == 0])
	row("churn", "%d ADD ok, %d DEL ok, %.2f ops/s achieved (asked %.1f); peak %d churned alive (max %d)",
		st.AddOK, st.DelOK, float64(st.AddOK+st.DelOK)/elapsed.Seconds(), s.cfg.Rate, s.fleet.peakAlive, s.cfg.MaxChurned)
	row("churn failures", "%d ADD and %d DEL unexpected; %d ADD refused while its agent was down (expected); %d DEL deferred",
		st.AddFailed, st.DelFailed, st.AddRefused, st.DelRetries)
	row("DELs owed", "%d paid after a failed ADD, %d retries failed; CNI GC run %d times on every host", st.OwedPaid, st.OwedFailed, s.gcRuns)
	for _, v := range []struct {
		verb string
		lat  soakLatencies
	}{{"add", st.AddLat}, {"del", st.DelLat}} {
		kept, dropped := v.lat.without(busy)
		h := s.sampler.hists[v.verb]
		ap50, ok50 := h.quantile(0.5)
		ap99, ok99 := h.quantile(0.99)
		agent := fmt.Sprintf("agent p50 %s%s, p99 %s%s (n=%.0f, from its histogram)",
			soakMs(ap50), map[bool]string{true: "", false: "+"}[ok50], soakMs(ap99), map[bool]string{true: "", false: "+"}[ok99], h.total())
		row("CNI "+strings.ToUpper(v.verb)+" latency", "lab call p50 %s, p90 %s, p99 %s, max %s (n=%d; %d during restarts left out) | %s",
			soakMs(soakQuantile(kept, 0.5)), soakMs(soakQuantile(kept, 0.9)), soakMs(soakQuantile(kept, 0.99)), soakMs(soakQuantile(kept, 1)),
			len(kept), dropped, agent)
	}
	sent, lost := s.pingTotals(false)
	tsent, tlost := s.pingTotals(true)
	row("probes", "workload pairs across hosts, every %s each: %d echoes, %d lost (%.4f%%); ToR -> a workload on each host: %d echoes, %d lost (%.4f%%)",
		soakProbeInterval, sent, lost, 100*float64(lost)/float64(max(sent, 1)), tsent, tlost, 100*float64(tlost)/float64(max(tsent, 1)))
	var lossWhere []string
	for _, r := range s.pingRes {
		for _, at := range r.LostAt {
			ev := s.tl.near(at, 10*time.Second)
			if ev == "" {
				ev = "no event within 10 s"
			}
			lossWhere = append(lossWhere, fmt.Sprintf("%s->%s at +%s (%s)", r.From, r.To, s.tl.offset(at), ev))
		}
	}
	if len(lossWhere) > 0 {
		row("  losses", "%s", soakList(lossWhere))
	}
	for _, op := range s.agentOps {
		res := "ok"
		if op.Err != "" {
			res = op.Err
		}
		row("agent "+op.Kind, "%s at +%s: ready %s after start, all BGP sessions %s after start; %s",
			op.Host, op.At.Round(time.Second), op.Ready.Round(time.Millisecond), op.Sessions.Round(time.Millisecond), res)
	}
	if s.crash != "" {
		row("  mid-ADD kill", "%s", s.crash)
	}
	var on, off []time.Duration
	for _, p := range s.policyOps {
		if p.Apply {
			on = append(on, p.Took)
		} else {
			off = append(off, p.Took)
		}
	}
	row("policy toggles", "%d applies (enforced after p50 %s, max %s), %d deletes (lifted after p50 %s, max %s)",
		len(on), soakMs(soakQuantile(on, 0.5)), soakMs(soakQuantile(on, 1)), len(off), soakMs(soakQuantile(off, 0.5)), soakMs(soakQuantile(off, 1)))
	okChecks, maxConv, maxAlive := 0, time.Duration(0), 0
	for _, c := range s.checks {
		if c.ok {
			okChecks++
		}
		maxConv, maxAlive = max(maxConv, c.converge), max(maxAlive, c.alive)
	}
	row("invariant checks", "%d of %d held (churn paused; converged within %s at most; up to %d churned alive at a check)",
		okChecks, len(s.checks), maxConv.Round(time.Millisecond), maxAlive)
	leaked := slices.Sorted(func(yield func(string) bool) {
		for k := range s.leakedSeen {
			if !yield(k) {
				return
			}
		}
	})
	row("IPAM leaks in grace", "%d seen %s; final wait for the GC %s", len(leaked), soakList(leaked), s.gcWait.Round(time.Second))
	row("etcd before/after", "%+v / %+v", s.baseline.Cluster, s.final.Cluster)
	for _, h := range s.l.Hosts() {
		row(h.Name+" before", "%s", s.baseline.Counts[h.Name])
		row(h.Name+" after", "%s", s.final.Counts[h.Name])
	}
	if n := len(s.sampler.etcdDB); n > 0 {
		first, last := s.sampler.etcdDB[0], s.sampler.etcdDB[n-1]
		perMin := (last - first) / elapsed.Minutes()
		row("etcd", "db size %s -> %s (+%s/min; the lab's etcd keeps the last 10000 revisions and is never defragmented, so the file does not shrink); %d revisions during the churn, %.1f per ADD/DEL",
			soakMiB(int64(first)), soakMiB(int64(last)), soakMiB(int64(perMin)), s.revs[1]-s.revs[0],
			float64(s.revs[1]-s.revs[0])/float64(max(1, st.AddOK+st.DelOK)))
	}
	w.Flush()

	b.WriteString("\nprocess growth (first sample | after warm-up: first -> last):\n")
	w = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "process\tpid\tRSS at start\tRSS warm first -> last\tgoroutines\tfds\tlocal endpoints\tspan")
	for _, g := range s.growth() {
		span := "too short to judge"
		if g.evaluated {
			span = g.span.Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s -> %s\t%.0f -> %.0f (start %.0f)\t%.0f -> %.0f\t%.0f -> %.0f\t%s\n",
			g.name, g.pid, soakMiB(g.first.RSS), soakMiB(g.from.RSS), soakMiB(g.to.RSS),
			g.from.Goroutines, g.to.Goroutines, g.first.Goroutines, g.from.FDs, g.to.FDs, g.from.LocalEPs, g.to.LocalEPs, span)
	}
	w.Flush()
	b.WriteString("\nagent log warnings and errors (all hosts, by message):\n" + s.logSummary())
	b.WriteString("\ntimeline:\n" + s.tl.String())
	if len(s.violations) > 0 {
		b.WriteString("\nviolations:\n")
		for _, v := range s.violations {
			b.WriteString("  - " + v + "\n")
		}
	}
	return b.String()
}

var soakLogMsgRE = regexp.MustCompile(`level=(WARN|ERROR) msg=("[^"]*"|\S+)`)

// logSummary counts the agents' WARN and ERROR lines by message.
func (s *soak) logSummary() string {
	counts := map[string]int{}
	for _, h := range s.l.Hosts() {
		data, err := os.ReadFile(h.AgentLog)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if m := soakLogMsgRE.FindStringSubmatch(line); m != nil {
				key := m[1] + " " + m[2]
				if m[2] == "sysctls" || m[2] == `"sysctls"` {
					key += " (" + soakFirstErr(line) + ")"
				}
				counts[key]++
			}
		}
	}
	keys := slices.Sorted(maps.Keys(counts))
	slices.SortStableFunc(keys, func(a, b string) int { return counts[b] - counts[a] })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %6d  %s\n", counts[k], k)
	}
	if len(keys) == 0 {
		b.WriteString("  none\n")
	}
	return b.String()
}

// soakFirstErr shortens an err= field to its kind: what failed, without
// the interface name.
func soakFirstErr(line string) string {
	_, e, ok := strings.Cut(line, "err=")
	if !ok {
		return "?"
	}
	switch {
	case strings.Contains(e, "no such file or directory"):
		return "no such file or directory"
	case len(e) > 60:
		return e[:60]
	}
	return e
}
