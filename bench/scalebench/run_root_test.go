package scalebench

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit/benchtest"
	"github.com/calyx-net/calyx/e2e/lab"
)

// TestRunSmallLab runs the whole benchmark at a small size against the
// real binaries: a three-host lab with one reflector, then two hosts with
// 2,000 remote endpoints of 20 fake nodes. Every figure must come out
// measured, and none of the namespaces the labs made, nor any process of
// the run, may be left afterwards.
func TestRunSmallLab(t *testing.T) {
	benchtest.NeedLab(t, "etcd", "ip", "ipset")
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	before := namespaces(t)
	// What the labs made, as they recorded it (other packages' tests may
	// make and remove namespaces meanwhile: only these must be gone).
	var made []string
	testHookLabUp = func(l *lab.Lab) { made = append(made, l.Namespaces()...) }
	t.Cleanup(func() { testHookLabUp = nil })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sz := sizes{hosts: 3, workloads: 2, reflectors: 1, idle: time.Second, adds: 3, remoteEndpoints: 2000, remoteNodes: 20, remoteBlocks: 20, allocsPerBlock: 50, settle: time.Second}
	figs, err := measure(ctx, sz, benchtest.Logger(t))
	if err != nil {
		t.Fatalf("benchmark: %v", err)
	}
	if m := missing(figs); len(m) > 0 {
		t.Errorf("figures not measured: %v (got %+v)", m, figs)
	}
	for _, f := range figs {
		t.Logf("%s = %.3g %s (%s %.3g; %s): %s", f.Name, f.Calyx, f.Unit, f.PeerName, f.Peer, f.Goal, f.Notes)
		if math.IsNaN(f.Calyx) || math.IsInf(f.Calyx, 0) || f.Peer <= 0 || f.Notes == "" {
			t.Errorf("%s: calyx %v, peer %v, notes %q: not measured", f.Name, f.Calyx, f.Peer, f.Notes)
		}
		// Memory per endpoint over 2,000 endpoints is noise; the rest
		// must be positive.
		if f.Calyx <= 0 && !strings.HasPrefix(f.Name, "agent_rss_") && f.Name != idleCPUFigureName {
			t.Errorf("%s = %v: not measured", f.Name, f.Calyx)
		}
	}
	if len(made) == 0 {
		t.Error("the labs recorded no namespace")
	}
	after := namespaces(t)
	for _, ns := range made {
		if slices.Contains(after, ns) && !slices.Contains(before, ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(tmp, "scalebench-*")); len(m) > 0 {
		t.Errorf("work directory left after a successful run: %v", m)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), tmp) {
			t.Errorf("process %s left behind: %s", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

func namespaces(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
