package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calyx-net/calyx/internal/heartbeat"
)

// group owns every long-lived goroutine of the agent and what they use.
// Loops and closers are steps, kept in start order; stop unwinds them in
// reverse: each loop is cancelled and waited for before anything started
// earlier is stopped or closed, so nothing is closed under a loop still
// using it. A loop that returns before stop, or that does not beat within
// its deadline, makes health report a problem (/livez, the watchdog).
type group struct {
	parent context.Context
	log    *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	steps    []*step
	stopping bool
}

// step is one loop (run non-nil) or one closer (close non-nil).
type step struct {
	name  string
	close func()

	cancel context.CancelFunc
	done   chan struct{} // closed when the loop has returned
	err    error         // what it returned; read after done
	// stall is how long the loop may go without a beat (0: it never
	// beats, only its death is noticed).
	stall    time.Duration
	lastBeat atomic.Int64 // unix nanoseconds
}

func newGroup(parent context.Context, log *slog.Logger) *group {
	return &group{parent: parent, log: log, now: time.Now}
}

// Go runs fn as the loop name until stop. fn's context carries a heartbeat
// (heartbeat.Beat); with stall > 0 the loop must beat at least that often.
// After stop has begun Go runs nothing.
func (g *group) Go(name string, stall time.Duration, fn func(context.Context) error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return
	}
	s := &step{name: name, stall: stall, done: make(chan struct{})}
	s.lastBeat.Store(g.now().UnixNano())
	ctx, cancel := context.WithCancel(g.parent)
	s.cancel = cancel
	ctx = heartbeat.With(ctx, func() { s.lastBeat.Store(g.now().UnixNano()) })
	g.steps = append(g.steps, s)
	go func() {
		defer close(s.done)
		s.err = fn(ctx)
		if g.isStopping() {
			if s.err != nil && !errors.Is(s.err, context.Canceled) {
				g.log.Warn("loop ended with an error while stopping", "loop", name, "err", s.err)
			}
			return
		}
		g.log.Error("loop stopped unexpectedly; /livez fails and the watchdog is no longer fed", "loop", name, "err", s.err)
	}()
}

// OnStop registers close to run when stop reaches it: after every loop
// started later has returned.
func (g *group) OnStop(name string, close func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		close()
		return
	}
	g.steps = append(g.steps, &step{name: name, close: close})
}

func (g *group) isStopping() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopping
}

// stop unwinds every step in reverse start order, waiting for each loop.
// A loop slow to return is reported every few seconds and waited for: the
// service manager's stop timeout is the last resort.
func (g *group) stop() {
	g.mu.Lock()
	if g.stopping {
		g.mu.Unlock()
		return
	}
	g.stopping = true
	steps := g.steps
	g.mu.Unlock()
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		if s.close != nil {
			s.close()
			continue
		}
		s.cancel()
		start := g.now()
		for waiting := true; waiting; {
			select {
			case <-s.done:
				waiting = false
			case <-time.After(5 * time.Second):
				g.log.Warn("still waiting for a loop to stop", "loop", s.name, "waited", g.now().Sub(start).Round(time.Second))
			}
		}
	}
}

// problems lists the loops that died or stalled; empty when all is well.
// Nothing is a problem once stop has begun.
func (g *group) problems() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return nil
	}
	now := g.now()
	var out []string
	for _, s := range g.steps {
		if s.close != nil {
			continue
		}
		select {
		case <-s.done:
			out = append(out, fmt.Sprintf("loop %s stopped: %v", s.name, deathCause(s.err)))
			continue
		default:
		}
		if s.stall > 0 {
			if since := now.Sub(time.Unix(0, s.lastBeat.Load())); since > s.stall {
				out = append(out, fmt.Sprintf("loop %s stalled: no heartbeat for %s (deadline %s)", s.name, since.Round(time.Second), s.stall))
			}
		}
	}
	sort.Strings(out)
	return out
}

func deathCause(err error) string {
	if err == nil {
		return "returned without error"
	}
	return err.Error()
}
