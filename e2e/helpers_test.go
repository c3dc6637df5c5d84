// Package e2e holds the end-to-end suites: each builds a lab (e2e/lab) with
// the real calyx-agent, calyx CNI plugin and calyxctl from the bin dir
// (CALYX_BIN_DIR, default ../bin) and checks what a user would see.
package e2e

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// binDir is where `make build` puts the binaries.
func binDir(t testing.TB) string {
	d := os.Getenv("CALYX_BIN_DIR")
	if d == "" {
		d = filepath.Join("..", "bin")
	}
	abs, err := filepath.Abs(d)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// requireLab skips, saying why, unless the machine can run a lab with the
// real binaries: root, the tools, and calyx-agent, calyx and calyxctl built.
func requireLab(t testing.TB, o lab.Options) {
	t.Helper()
	if os.Getenv("CALYX_E2E_SKIP") != "" {
		t.Skip("CALYX_E2E_SKIP is set")
	}
	o.BinDir = binDir(t)
	if err := lab.CheckDeps(o, lab.CalyxctlBinary); err != nil {
		if errors.Is(err, lab.ErrMissingDependency) {
			t.Skipf("end-to-end suite skipped: %v", err)
		}
		t.Fatal(err)
	}
}

// upLab builds a lab for the test with the real binaries; Down runs in
// t.Cleanup, whatever happens.
func upLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	requireLab(t, o)
	o.Dir = t.TempDir()
	o.BinDir = binDir(t)
	o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	if o.AgentLogLevel == "" {
		o.AgentLogLevel = "debug"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, o)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, l)
		}
		l.Down()
	})
	return l
}

// waitEstablished waits for every BGP session of the lab.
func waitEstablished(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := l.WaitEstablished(ctx); err != nil {
		t.Fatal(err)
	}
}

// dumpLogs prints the tail of every agent log of a failed test.
func dumpLogs(t *testing.T, l *lab.Lab) {
	for _, h := range l.Hosts() {
		data, err := os.ReadFile(h.AgentLog)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("---- %s (last %d lines of %s)\n%s", h.Name, len(lines), h.AgentLog, strings.Join(lines, "\n"))
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
