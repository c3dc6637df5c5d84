package lab

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// requireRoot skips unless the test can build a lab: root and the tools.
func requireRoot(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range append([]string{"ip", "etcd", "ping"}, tools...) {
		if _, err := lookTool(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// upTest runs Up with the options and registers Down.
func upTest(t *testing.T, o Options) *Lab {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	o.Logger = testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := Up(ctx, o)
	if err != nil {
		// Up cleaned up already; still sweep by prefix for the record.
		_ = DownDir(o.Dir, false, nil)
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(l.Down)
	return l
}

// assertNoLeftovers checks that nothing of the lab with this prefix
// remains: no namespace, no live process.
func assertNoLeftovers(t *testing.T, prefix string, procs []Proc) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, prefix) {
			t.Errorf("namespace left behind: %s", line)
		}
	}
	for _, p := range procs {
		if p.alive() {
			t.Errorf("process left behind: %s pid %d", p.Name, p.PID)
			continue
		}
		// Not even a zombie: this test process started it, so the lab
		// must have reaped it (or, after a crash, init did).
		deadline := time.Now().Add(2 * time.Second)
		for {
			state, start, err := procStat(p.PID)
			if err != nil || start != p.StartTicks {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s pid %d lingers in state %c", p.Name, p.PID, state)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
