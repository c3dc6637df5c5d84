package e2e

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
)

// soakChaos is one planned agent event.
type soakChaos struct {
	at   time.Time
	host string
	kill bool
}

// soakAgentOp is what one restart or kill measured.
type soakAgentOp struct {
	Kind, Host      string
	At              time.Duration // since the start
	Ready, Sessions time.Duration // from the start command to ready, to every BGP session Established
	Err             string
}

// soakPolicyOp is one policy toggle and how long enforcement took.
type soakPolicyOp struct {
	Apply bool
	At    time.Duration
	Took  time.Duration // until the first echo that saw the sentinel's reachability change
	Err   string
}

// chaosPlan: a restart every RestartEvery (none in the last 30 s), and one
// SIGKILL half way between the first two restarts (or half way to the
// first). host1's agent is never touched, so that its RSS and goroutines
// cover the whole run; the events go to host2 and host3 at random.
func (s *soak) chaosPlan() []soakChaos {
	var plan []soakChaos
	pick := func() string { return []string{"host2", "host3"}[s.rng.IntN(2)] }
	end := s.start.Add(s.cfg.Duration - 30*time.Second)
	for at := s.start.Add(s.cfg.RestartEvery); at.Before(end); at = at.Add(s.cfg.RestartEvery) {
		plan = append(plan, soakChaos{at: at, host: pick()})
	}
	kill := s.start.Add(s.cfg.Duration / 3)
	switch {
	case len(plan) >= 2:
		kill = plan[0].at.Add(plan[1].at.Sub(plan[0].at) / 2)
	case len(plan) == 1:
		kill = s.start.Add(plan[0].at.Sub(s.start) / 2)
	}
	k := soakChaos{at: kill, host: pick(), kill: true}
	for i, c := range plan {
		if k.at.Before(c.at) {
			return append(plan[:i], append([]soakChaos{k}, plan[i:]...)...)
		}
	}
	return append(plan, k)
}

// restartAgent stops host's agent with SIGTERM, leaves it down for a
// second (the churn's ADDs there are refused meanwhile, those elsewhere go
// on), starts it and waits for its BGP sessions.
func (s *soak) restartAgent(ctx context.Context, host string) {
	op := soakAgentOp{Kind: "SIGTERM+start", Host: host, At: time.Since(s.start)}
	s.sampler.scrapeHost(ctx, host)
	s.fleet.setDown(host, true)
	s.tl.add("SIGTERM to the agent of " + host)
	t0 := time.Now()
	err := s.l.StopAgent(host)
	s.tl.addBusy(t0)
	if err != nil {
		op.Err = err.Error()
		s.violate("stopping the agent of %s: %v", host, err)
	}
	time.Sleep(time.Second)
	s.startAgain(ctx, &op)
}

// crashAgent kills host's agent with SIGKILL in the middle of a CNI ADD on
// that host (the churn holds still for the moment, so that the ADD starts
// at once and the kill lands a random few milliseconds into it), leaves it
// dead for 3 s and starts it again. No DEL is retried for that ADD, as
// after a runtime that lost its state: the runtime's periodic CNI GC (run
// before each check) and the IPAM's GC must clean up what it left.
func (s *soak) crashAgent(ctx context.Context, host string) {
	op := soakAgentOp{Kind: "SIGKILL mid-ADD", Host: host, At: time.Since(s.start)}
	var proc lab.Proc
	for _, p := range s.l.Processes() {
		if p.Name == "agent-"+host && p.Alive() {
			proc = p
		}
	}
	if proc.PID == 0 {
		s.violate("the agent of %s does not run before the planned SIGKILL", host)
		return
	}
	// The agent's part comes last in a lab ADD (namespace, state file,
	// libcni and the plugin's exec go first): aim at the last 40 % of a
	// median ADD.
	lat, _ := s.churn.snapshotStats().AddLat.without(nil)
	median := soakQuantile(lat, 0.5)
	if median <= 0 {
		median = 25 * time.Millisecond
	}
	delay := median*6/10 + time.Duration(s.rng.Int64N(int64(median*4/10)+1))
	s.sampler.scrapeHost(ctx, host)
	name := s.churn.nextName("k")
	s.churn.paused(func() {
		res := make(chan error, 1)
		go func() {
			res <- s.churn.addOn(ctx, name, host, map[string]string{"soak": "churn", "soak-app": "b", "soak-gen": "k"})
		}()
		time.Sleep(delay)
		s.fleet.setDown(host, true)
		s.tl.add(fmt.Sprintf("SIGKILL to the agent of %s, %s into the ADD of %s", host, delay.Round(time.Millisecond), name))
		if proc.Alive() { // same PID and start time: never a stranger
			_ = syscall.Kill(proc.PID, syscall.SIGKILL)
		}
		err := <-res
		for deadline := time.Now().Add(5 * time.Second); proc.Alive() && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		outcome := "the ADD had already succeeded"
		if err != nil {
			// This one is left to the runtime's CNI GC (and the IPAM's
			// GC), not to a DEL: a runtime that restarted has forgotten it.
			s.fleet.paid(name)
			outcome = "the ADD failed (left to CNI GC and IPAM GC): " + err.Error()
		}
		s.mu.Lock()
		s.crash = fmt.Sprintf("%s: SIGKILL %s into the ADD of %s; %s", host, delay.Round(time.Millisecond), name, outcome)
		s.mu.Unlock()
	})
	time.Sleep(3 * time.Second)
	s.startAgain(ctx, &op)
}

// startAgain starts the agent of op.Host and waits for its sessions.
func (s *soak) startAgain(ctx context.Context, op *soakAgentOp) {
	t1 := time.Now()
	err := s.l.StartAgent(ctx, op.Host)
	s.tl.addBusy(t1)
	op.Ready = time.Since(t1)
	s.fleet.setDown(op.Host, false)
	if err != nil {
		op.Err = err.Error()
		s.violate("starting the agent of %s again: %v", op.Host, err)
	} else {
		s.tl.add(fmt.Sprintf("agent of %s ready after %s", op.Host, op.Ready.Round(time.Millisecond)))
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		if err := s.l.WaitEstablished(wctx); err != nil {
			op.Err = err.Error()
			s.violate("after the %s of %s's agent: %v", op.Kind, op.Host, err)
		}
		cancel()
		op.Sessions = time.Since(t1)
		s.tl.add(fmt.Sprintf("every BGP session Established %s after the start of %s's agent", op.Sessions.Round(time.Millisecond), op.Host))
	}
	s.mu.Lock()
	s.agentOps = append(s.agentOps, *op)
	s.mu.Unlock()
}

// togglePolicy applies the soak's policy, or deletes it, and measures how
// long until the sentinel soak-app=b is blocked (or reachable again) from
// a long-lived workload; while applied, the sentinel soak-app=a must reach
// it.
func (s *soak) togglePolicy(ctx context.Context) {
	op := soakPolicyOp{Apply: !s.policyOn, At: time.Since(s.start)}
	b, _ := s.fleet.get("sent-b")
	t0 := time.Now()
	var err error
	if op.Apply {
		err = s.l.Apply(ctx, []byte(soakPolicyYAML))
	} else {
		var ds *datastore.Client
		if ds, err = s.l.Datastore(); err == nil {
			err = ds.Delete(ctx, datastore.KindPolicy, soakPolicyName)
		}
	}
	if err != nil {
		op.Err = err.Error()
		s.violate("policy toggle (apply %v): %v", op.Apply, err)
		return
	}
	s.policyOn = op.Apply
	s.tl.add(map[bool]string{true: "policy applied", false: "policy deleted"}[op.Apply])
	deadline := t0.Add(s.cfg.Converge)
	for {
		// A blocked echo costs the ping's 1 s timeout: time the change by
		// the start of the first echo that shows it.
		sent := time.Now()
		blocked := s.l.Ping("ll-h1-1", b.IP) != nil
		if blocked && op.Apply && s.l.Ping("ll-h1-1", b.IP) == nil {
			blocked = false // one lost echo, not the policy
		}
		if blocked == op.Apply {
			op.Took = sent.Sub(t0)
			if op.Apply {
				if err := s.l.Ping("sent-a", b.IP); err != nil {
					op.Err = "sent-a (soak-app=a) cannot reach sent-b although the policy allows it"
					s.violate("policy applied: %s", op.Err)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			op.Took = time.Since(t0)
			op.Err = fmt.Sprintf("ll-h1-1 -> sent-b still %s after %s", map[bool]string{true: "blocked", false: "reachable"}[blocked], s.cfg.Converge)
			s.violate("policy toggle (apply %v): %s", op.Apply, op.Err)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.mu.Lock()
	s.policyOps = append(s.policyOps, op)
	s.mu.Unlock()
}
