package scalebench

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// convergence is what the big lab measured.
type convergence struct {
	up, established, routes time.Duration // Up; then until every session, every route
	steps                   []lab.StepReport
	// idleCPU is each agent's share of a core (%) over the idle sample.
	idleCPU []float64
	agents  int
}

// total is the convergence time: from Up's start to every route in
// every kernel.
func (c convergence) total() time.Duration { return c.up + c.established + c.routes }

// measureConvergence brings up the big lab as `calyx-lab up --hosts N
// --workloads W --reflectors R` does, waits until it has converged, then
// samples the agents' CPU while nothing happens.
func measureConvergence(ctx context.Context, sz sizes, opts lab.Options, log *slog.Logger) (c convergence, err error) {
	opts.Hosts, opts.Workloads, opts.Reflectors = sz.hosts, sz.workloads, sz.reflectors
	err = withLab(ctx, opts, log, func(l *lab.Lab, upTook time.Duration) error {
		c.up, c.steps = upTook, l.Steps()
		wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		start := time.Now()
		if err := l.WaitEstablished(wctx); err != nil {
			return err
		}
		c.established = time.Since(start)
		start = time.Now()
		if err := l.WaitRoutes(wctx); err != nil {
			return err
		}
		c.routes = time.Since(start)
		log.Info("converged", "up", c.up.Round(time.Millisecond), "established", c.established.Round(time.Millisecond),
			"routes", c.routes.Round(time.Millisecond))
		c.idleCPU, err = idleCPU(ctx, l, sz.idle)
		c.agents = len(c.idleCPU)
		return err
	})
	return c, err
}

// idleCPU samples every agent's CPU time over the window, after a second
// of quiet, and returns each one's share of a core in percent.
func idleCPU(ctx context.Context, l *lab.Lab, window time.Duration) ([]float64, error) {
	if err := sleep(ctx, time.Second); err != nil {
		return nil, err
	}
	var agents []lab.Proc
	for _, p := range l.Processes() {
		if strings.HasPrefix(p.Name, "agent-") && p.Alive() {
			agents = append(agents, p)
		}
	}
	if len(agents) == 0 {
		return nil, fmt.Errorf("no agent runs")
	}
	before := make([]float64, len(agents))
	for i, p := range agents {
		before[i] = p.CPU()
	}
	start := time.Now()
	if err := sleep(ctx, window); err != nil {
		return nil, err
	}
	took := time.Since(start).Seconds()
	out := make([]float64, len(agents))
	for i, p := range agents {
		if !p.Alive() {
			return nil, fmt.Errorf("%s (pid %d) died while idle", p.Name, p.PID)
		}
		out[i] = (p.CPU() - before[i]) / took * 100
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// stepsNote lays the Up time out by step, slowest first.
func stepsNote(steps []lab.StepReport) string {
	s := slices.Clone(steps)
	slices.SortFunc(s, func(a, b lab.StepReport) int { return int(b.Took - a.Took) })
	var parts []string
	for _, r := range s {
		if r.Took < 100*time.Millisecond {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f s", r.Step, r.Took.Seconds()))
	}
	return strings.Join(parts, ", ")
}
