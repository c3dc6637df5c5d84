package bgpbench

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// TestRunSmallLab runs the whole benchmark at a small size against the
// real binaries: a three-host lab, the /32-block pool, two BIRDs on the
// fabric. It checks that every figure comes out measured, and that nothing
// is left behind.
func TestRunSmallLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	for _, tool := range []string{"bird", "birdc", "etcd", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	// The lab's directory names its namespace prefix: another lab running
	// meanwhile (another package's test), or one a killed run left, has a
	// prefix of its own.
	dir := filepath.Join(t.TempDir(), "bgpbench")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	figs, err := measure(ctx, dir, sizes{prefixes: 1000, convergenceRuns: 3, scaleRounds: 1, quick: true}, log)
	if err != nil {
		t.Fatalf("benchmark: %v", err)
	}
	want := []string{"bgp_new_block_p99_ms", "bgp_new_block_median_ms", "bgp_100k_to_kernel", "bgp_100k_withdraw",
		"bgp_100k_agent_cpu_s", "bgp_100k_agent_rss_mib", "bgp_100k_agent_rss_settled_mib", "bgp_bfd_failover_ms"}
	if len(figs) != len(want) {
		t.Fatalf("got %d figures, want %v: %+v", len(figs), want, figs)
	}
	for i, f := range figs {
		if f.Name != want[i] {
			t.Errorf("figure %d is %s, want %s", i, f.Name, want[i])
		}
		// BIRD's CPU for 1000 prefixes is below the clock tick (10 ms).
		if (f.Peer <= 0 && f.Name != "bgp_100k_agent_cpu_s") || f.Notes == "" {
			t.Errorf("%s: peer %v, notes %q: not measured", f.Name, f.Peer, f.Notes)
		}
	}
	for _, f := range figs[2:] {
		if f.Calyx <= 0 {
			t.Errorf("%s: calyx %v: not measured", f.Name, f.Calyx)
		}
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), lab.Prefix(dir)) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestProfileScale runs one 100k-prefix round per side with host1's agent
// profiled (see profile.go); only with CALYX_BENCH_PPROF_DIR set:
//
//	CALYX_BENCH_PPROF_DIR=/tmp/prof go test ./bench/bgpbench -run TestProfileScale -v
func TestProfileScale(t *testing.T) {
	if profileDir() == "" {
		t.Skip("set CALYX_BENCH_PPROF_DIR to profile the agent through a 100k-prefix round")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	figs, err := measure(ctx, workDir(t), sizes{prefixes: 100_000, convergenceRuns: 1, scaleRounds: 1, quick: true}, log)
	if err != nil {
		t.Fatalf("benchmark: %v", err)
	}
	for _, f := range figs {
		t.Logf("%s: calyx %v, peer %v %s", f.Name, f.Calyx, f.Peer, f.Unit)
	}
}

// TestScaleOnly runs the 100k-prefix scale part alone (with one
// convergence run and the quick failover), CALYX_BENCH_SCALE_ROUNDS
// rounds per side: for comparing builds side by side.
//
//	CALYX_BENCH_SCALE_ROUNDS=3 CALYX_BIN_DIR=bin go test ./bench/bgpbench -run TestScaleOnly -v
func TestScaleOnly(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("CALYX_BENCH_SCALE_ROUNDS"))
	if rounds < 1 {
		t.Skip("set CALYX_BENCH_SCALE_ROUNDS to run the 100k-prefix scale rounds alone")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	figs, err := measure(ctx, workDir(t), sizes{prefixes: 100_000, convergenceRuns: 1, scaleRounds: rounds, quick: true}, log)
	if err != nil {
		t.Fatalf("benchmark: %v", err)
	}
	for _, f := range figs {
		t.Logf("%s: calyx %v, peer %v %s (%s)", f.Name, f.Calyx, f.Peer, f.Unit, f.Notes)
	}
}

// workDir is a lab directory that outlives the test, so that the logs of
// a failed profiling run stay (measure removes it after a success).
func workDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "bgpbench-")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
