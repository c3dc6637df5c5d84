package netbench

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

// needs skips the test when it cannot run here: not root, or a tool or
// the binaries are missing (as the e2e suites do).
func needs(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"etcd", "iperf3", "ss", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
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

// TestRunQuick runs the quick benchmark once: both figures are there with
// both sides measured, and nothing is left behind. No timing is asserted.
func TestRunQuick(t *testing.T) {
	needs(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seen := watchWorkDir(ctx, tmp, "netbench-*")
	figs, err := Run(ctx, true, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, unit, peer string }{
		{"dataplane_tcp_gbps", "Gbit/s", "host-to-host"},
		{"dataplane_new_workload_first_ping_ms", "ms", "fabric ping RTT"},
	}
	if len(figs) != len(want) {
		t.Fatalf("got %d figures, want %d: %+v", len(figs), len(want), figs)
	}
	for i, f := range figs {
		if f.Name != want[i].name || f.Unit != want[i].unit || f.PeerName != want[i].peer {
			t.Errorf("figure %d = %s (%s, peer %s), want %+v", i, f.Name, f.Unit, f.PeerName, want[i])
		}
		if f.Calyx <= 0 || f.Peer <= 0 || f.Goal == "" {
			t.Errorf("%s not measured on both sides: %+v", f.Name, f)
		}
		t.Logf("%s: calyx %.3f %s, %s %.3f, ratio %.2f (%s, met %v)", f.Name, f.Calyx, f.Unit, f.PeerName, f.Peer, f.Ratio, f.Goal, f.Met)
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
