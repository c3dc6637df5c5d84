package cnibench

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/routes/netns"
)

// A process execs a CNI plugin in its own network namespace, and ptp takes
// that namespace as the host. So every timed call runs on a goroutine locked
// to an OS thread that has entered the lab host's namespace
// (routes/netns.Do), as a runtime living in that host would.

// samples are the latencies of one side, per verb.
type samples struct{ add, del []time.Duration }

// sequentialRound attaches n fresh workloads one after the other, then
// detaches them one after the other, timing each call.
func (s *side) sequentialRound(ctx context.Context, n int, into *samples) (err error) {
	ws, err := s.newWorkloads(ctx, n)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.release(ws)) }()
	return netns.Do(benchkit.NetnsPath(s.hostNetns), func() error {
		for _, w := range ws {
			took, err := s.add(ctx, w)
			if err != nil {
				return err
			}
			into.add = append(into.add, took)
		}
		for _, w := range ws {
			took, err := s.del(ctx, w)
			if err != nil {
				return err
			}
			into.del = append(into.del, took)
		}
		return nil
	})
}

// parallelRound attaches n fresh workloads all at once (each call on its
// own thread in the host namespace, released together), then detaches them
// all at once; each call is timed on its own.
func (s *side) parallelRound(ctx context.Context, n int, into *samples) (err error) {
	ws, err := s.newWorkloads(ctx, n)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.release(ws)) }()
	adds, err := s.together(ctx, ws, s.add)
	if err != nil {
		return err
	}
	dels, err := s.together(ctx, ws, s.del)
	if err != nil {
		return err
	}
	into.add = append(into.add, adds...)
	into.del = append(into.del, dels...)
	return nil
}

// together runs op for every workload at the same moment: each goroutine
// enters the host namespace first, and all start when the last is in.
func (s *side) together(ctx context.Context, ws []*workload, op func(context.Context, *workload) (time.Duration, error)) ([]time.Duration, error) {
	took := make([]time.Duration, len(ws))
	errs := make([]error, len(ws))
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for i, w := range ws {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			entered := false
			errs[i] = netns.Do(benchkit.NetnsPath(s.hostNetns), func() error {
				entered = true
				ready.Done()
				<-start
				var err error
				took[i], err = op(ctx, w)
				return err
			})
			if !entered {
				ready.Done()
			}
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return took, errors.Join(errs...)
}
