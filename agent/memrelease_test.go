package agent

import (
	"testing"
	"time"
)

// The release waits for the burst to be over: a large handover restarts
// the quiet period, a small one does not, and below the threshold nothing
// is released.
func TestBurstRelease(t *testing.T) {
	b := newBurstRelease()
	defer b.stop()
	released := make(chan struct{}, 8)
	b.release = func() { released <- struct{}{} }
	fired := func() bool {
		select {
		case <-b.C():
			b.fire()
		case <-time.After(releaseQuiet + 500*time.Millisecond):
			return false
		}
		select {
		case <-released:
			return true
		case <-time.After(5 * time.Second):
			t.Fatal("fire did not release")
			return false
		}
	}

	b.note(releaseAfterRoutes - 1)
	if b.armed {
		t.Fatal("armed below the threshold")
	}
	b.note(1)
	if !b.armed {
		t.Fatal("not armed at the threshold")
	}
	if !fired() || b.pending != 0 {
		t.Fatalf("no release, or %d still pending", b.pending)
	}

	// A burst in large handovers: the release comes a quiet period after
	// the last one, not after the first.
	b.note(releaseAfterRoutes)
	time.Sleep(releaseQuiet / 2)
	start := time.Now()
	b.note(releaseAfterRoutes / 10)
	if !fired() || time.Since(start) < releaseQuiet-100*time.Millisecond {
		t.Fatalf("released %v after the last large handover; want %v", time.Since(start), releaseQuiet)
	}

	// Small handovers after the threshold do not put it off.
	b.note(releaseAfterRoutes)
	start = time.Now()
	for range 5 {
		time.Sleep(releaseQuiet / 5)
		b.note(1)
	}
	if !fired() || time.Since(start) > releaseQuiet+releaseQuiet/2 {
		t.Fatalf("released %v after the burst; small handovers put it off", time.Since(start))
	}
}
