package cnibench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit/benchtest"
)

// needs skips the test when it cannot run here: not root, or the binaries
// or the reference plugins are missing (as the e2e suites do).
func needs(t *testing.T) {
	t.Helper()
	benchtest.NeedLab(t, "etcd")
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(refPluginDir, p)); err != nil {
			t.Skipf("%s not installed (Debian containernetworking-plugins)", p)
		}
	}
}

// TestRunQuick runs the quick benchmark once: every figure is there with
// both sides measured, and nothing is left behind. No timing is asserted.
func TestRunQuick(t *testing.T) {
	needs(t)
	figs := benchtest.RunQuick(t, "cnibench-*", Run)
	want := []string{"cni_add_median", "cni_add_p99", "cni_del_median", burstName(quickSizes)}
	if len(figs) != len(want) {
		t.Fatalf("got %d figures, want %v: %+v", len(figs), want, figs)
	}
	for i, f := range figs {
		if f.Name != want[i] || f.Unit != "ms" || f.PeerName != refName {
			t.Errorf("figure %d = %s (%s, peer %s), want %s in ms beside %s", i, f.Name, f.Unit, f.PeerName, want[i], refName)
		}
		if f.Calyx <= 0 || f.Peer <= 0 || f.Ratio <= 0 || f.Goal == "" {
			t.Errorf("%s not measured on both sides: %+v", f.Name, f)
		}
		t.Logf("%s: calyx %.2f ms, %s %.2f ms, ratio %.2f (%s, met %v)", f.Name, f.Calyx, f.PeerName, f.Peer, f.Ratio, f.Goal, f.Met)
	}
}

// TestRunCleansUpWhenCancelled interrupts the benchmark in the middle (as
// Ctrl-C does): Run returns and leaves no namespace or process.
func TestRunCleansUpWhenCancelled(t *testing.T) {
	needs(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel in the timed rounds: both sides have warmed up (their libcni
	// caches exist) and a few rounds ran.
	go func() {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if m, _ := filepath.Glob(filepath.Join(tmp, "cnibench-*", "cache-ptp")); len(m) > 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		cancel()
	}()
	_, err := Run(ctx, true, benchtest.Logger(t))
	if err == nil {
		t.Log("the benchmark finished before the cancel arrived; checking the cleanup anyway")
	} else {
		t.Logf("cancelled run returned: %v", err)
	}
	dirs, err := filepath.Glob(filepath.Join(tmp, "cnibench-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 1 {
		t.Fatalf("want one work directory under %s, got %v", tmp, dirs)
	}
	benchtest.AssertNothingLeft(t, dirs[0])
}
