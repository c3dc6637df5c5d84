package cnibench

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

	"github.com/calyx-net/calyx/e2e/lab"
)

// needs skips the test when it cannot run here: not root, or the binaries
// or the reference plugins are missing (as the e2e suites do).
func needs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("etcd not installed (Debian etcd-server)")
	}
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(refPluginDir, p)); err != nil {
			t.Skipf("%s not installed (Debian containernetworking-plugins)", p)
		}
	}
	dir := os.Getenv("CALYX_BIN_DIR")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Skip(err)
		}
		dir = filepath.Join(root, "bin")
	}
	if missing := missingBinaries(dir); len(missing) > 0 {
		t.Skipf("%s lacks %v: run `make build` first", dir, missing)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// workDirs returns the benchmark's work directories made under tmp.
func workDirs(t *testing.T, tmp string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(tmp, "cnibench-*"))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// assertNothingLeft checks that no namespace and no process of the lab in
// work survived Run.
func assertNothingLeft(t *testing.T, work string) {
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

// TestRunQuick runs the quick benchmark once: every figure is there with
// both sides measured, and nothing is left behind. No timing is asserted.
func TestRunQuick(t *testing.T) {
	needs(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seen := watchWorkDir(ctx, tmp, "cnibench-*")
	figs, err := Run(ctx, true, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cni_add_median", "cni_del_median", "cni_add_p99", "cni_add_parallel20_median"}
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
	work := seen()
	if work == "" {
		t.Fatal("the benchmark's work directory was never seen")
	}
	if _, err := os.Stat(work); err == nil {
		t.Errorf("work directory %s left after a successful run", work)
	}
	assertNothingLeft(t, work)
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
	_, err := Run(ctx, true, testLogger(t))
	if err == nil {
		t.Log("the benchmark finished before the cancel arrived; checking the cleanup anyway")
	} else {
		t.Logf("cancelled run returned: %v", err)
	}
	dirs := workDirs(t, tmp)
	if len(dirs) != 1 {
		t.Fatalf("want one work directory under %s, got %v", tmp, dirs)
	}
	assertNothingLeft(t, dirs[0])
}
