// Package benchtest holds what the tests of the lab benchmarks share:
// skipping where a lab cannot run, running a suite's quick benchmark and
// checking that it left nothing behind.
package benchtest

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// NeedLab skips the test when a lab cannot run here: not root, one of the
// tools missing, or the Calyx binaries not built (tests do not build them,
// as the e2e suites do not).
func NeedLab(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir, err := benchkit.ExpectedBinDir()
	if err != nil {
		t.Skip(err)
	}
	if missing := benchkit.MissingBinaries(dir); len(missing) > 0 {
		t.Skipf("%s lacks %v: run `make build` first", dir, missing)
	}
}

// Logger writes the benchmark's log into the test's output.
func Logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// RunQuick runs a suite's quick benchmark once, with $TMPDIR in the test's
// own directory and a bound of 2 minutes, and fails the test when it
// fails. Then it checks that the run removed its work directory (pattern,
// e.g. "cnibench-*") and left no namespace or process of its lab behind.
func RunQuick(t *testing.T, pattern string, run func(context.Context, bool, *slog.Logger) ([]bench.Figure, error)) []bench.Figure {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seen := watchWorkDir(ctx, tmp, pattern)
	figs, err := run(ctx, true, Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	work := seen()
	if work == "" {
		t.Fatal("the benchmark's work directory was never seen")
	}
	if _, err := os.Stat(work); err == nil {
		t.Errorf("work directory %s left after a successful run", work)
	}
	AssertNothingLeft(t, work)
	return figs
}

// watchWorkDir notes the work directory Run makes under tmp (it is gone
// after a successful run, and the lab's prefix derives from its path).
func watchWorkDir(ctx context.Context, tmp, pattern string) (seen func() string) {
	found := make(chan string, 1)
	go func() {
		for ctx.Err() == nil {
			if m, _ := filepath.Glob(filepath.Join(tmp, pattern)); len(m) > 0 {
				found <- m[0]
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		found <- ""
	}()
	var dir string
	var once sync.Once
	return func() string {
		once.Do(func() { dir = <-found })
		return dir
	}
}

// AssertNothingLeft checks that no namespace and no process of the lab in
// work (a benchmark's work directory) survived Run.
func AssertNothingLeft(t *testing.T, work string) {
	t.Helper()
	prefix := lab.Prefix(filepath.Join(work, "lab"))
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), work) {
			t.Errorf("process %s left behind: %s", filepath.Dir(p), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
