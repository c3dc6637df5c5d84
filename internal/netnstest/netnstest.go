// Package netnstest creates throw-away network namespaces for tests. Every
// namespace is named "cxt-<tag>-<random>" so tests of other packages (and
// other worktrees) running at the same time never collide, and is deleted
// (with every link in it) in t.Cleanup even when the test fails. Code that
// runs inside one uses routes/netns.Do.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireRoot skips the test unless it runs as root with the ip tool.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs the ip tool (iproute2)")
	}
}

// NS is a named network namespace created for one test.
type NS struct {
	Name string
	Path string
}

// New creates a namespace and registers its deletion.
func New(tb testing.TB, tag string) NS {
	tb.Helper()
	RequireRoot(tb)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "cxt-" + tag + "-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns := NS{Name: name, Path: "/run/netns/" + name}
	ns.MustRun(tb, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace and returns its combined output.
func (ns NS) Run(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// MustRun is Run that fails the test on error.
func (ns NS) MustRun(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := ns.Run(args...)
	if err != nil {
		tb.Fatalf("in %s: %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}
