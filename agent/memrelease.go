package agent

import (
	"runtime/debug"
	"time"
)

// A large BGP burst (a ToR sending or withdrawing 100k prefixes) leaves
// the heap at about twice what stays live: GoBGP allocates several KB per
// prefix on the way through, and the GC lets the heap grow to twice what
// survived its last cycle. Until the runtime's scavenger gives the free
// pages back, minutes later, RSS stays at the peak. burstRelease returns
// them once the burst is over: a forced collection and release (one full
// GC, ~0.1 s of CPU at 100k prefixes) when releaseQuiet has passed with no
// large handover of learned routes.

const (
	releaseAfterRoutes = 10_000 // learned routes handed over since the last release
	releaseQuiet       = 2 * time.Second
)

type burstRelease struct {
	pending int  // learned routes handed over since the last release
	armed   bool // the timer runs
	timer   *time.Timer
	release func()
}

func newBurstRelease() *burstRelease {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &burstRelease{timer: t, release: debug.FreeOSMemory}
}

// note counts n routes handed over. Past the threshold the timer starts;
// a large handover restarts it (the burst goes on), a small one does not,
// so steady churn cannot put the release off for ever.
func (b *burstRelease) note(n int) {
	b.pending += n
	if b.pending < releaseAfterRoutes {
		return
	}
	if !b.armed || n >= releaseAfterRoutes/10 {
		b.armed = true
		b.timer.Reset(releaseQuiet)
	}
}

// C fires when a release is due; the loop then calls fire.
func (b *burstRelease) C() <-chan time.Time { return b.timer.C }

// fire releases off the loop's goroutine: the full collection takes
// ~0.1-0.2 s at 100k prefixes, which the loop should not wait for.
func (b *burstRelease) fire() {
	b.pending, b.armed = 0, false
	go b.release()
}

func (b *burstRelease) stop() { b.timer.Stop() }
