package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/netlab"
)

// A program that holds the xtables lock fails a write within LockTimeout
// (it does not stall the policy loop), shows in Ready after MaxFailures,
// and the write succeeds once the lock is free. The lock is a private file
// (XTABLES_LOCKFILE), the tables a private namespace's: the root
// namespace's iptables and /run/xtables.lock are never touched.
func TestStuckXtablesLock(t *testing.T) {
	skipUnlessLab(t)
	if _, err := os.Stat("/usr/sbin/iptables-legacy-restore"); err != nil {
		t.Skip("needs iptables-legacy (only the legacy backend takes the xtables lock)")
	}
	lockFile := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockFile)
	ctx := context.Background()
	lab := netlab.New("lock")
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	ns, err := lab.NS(ctx, "lk")
	if err != nil {
		t.Fatal(err)
	}
	dp, err := New(Config{NodeName: "node-a", Backend: BackendLegacy, LockTimeout: time.Second, MaxFailures: 2,
		CommandPrefix: []string{"ip", "netns", "exec", ns}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.SetEndpoint(testEndpoint("web", "cxweb", "10.244.0.2/32", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	if err := dp.Apply(ctx); err != nil {
		t.Fatalf("first apply: %v", err)
	}

	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	pol := dbIngress()
	pol.Spec.Selector = `app == "web"`
	if err := dp.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	// Old code waited for the lock forever: this deadline ends the wait.
	for i := range 2 {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		err := dp.Apply(actx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, errXtablesLock) || !strings.Contains(err.Error(), "more than 1s") {
			t.Fatalf("apply %d under a held lock: %v (after %v), want the xtables lock error", i+1, err, took.Round(time.Millisecond))
		}
		if took > 4*time.Second {
			t.Errorf("apply %d under a held lock took %v; the lock timeout is 1s", i+1, took.Round(time.Millisecond))
		}
	}
	if err := dp.Ready(); err == nil || !strings.Contains(err.Error(), "xtables lock is held by another program") {
		t.Errorf("Ready under a held lock: %v", err)
	}

	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := dp.Apply(ctx); err != nil {
		t.Fatalf("apply once the lock is free: %v", err)
	}
	if err := dp.Ready(); err != nil {
		t.Errorf("Ready once the lock is free: %v", err)
	}
	out, err := netlab.Exec(ctx, ns, "iptables-legacy-save", "-t", "filter")
	if err != nil {
		t.Fatal(err)
	}
	if chain := policyChainName(pol.Metadata.Name, ingress); !strings.Contains(out, ":"+chain+" ") {
		t.Errorf("the policy's chain is missing once the lock is free:\n%s", out)
	}
}
