package agent_test

// calyxctl against the real agent's socket: the log level changes at
// runtime, and the agent's version is reachable.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLogLevelAndVersionOverTheSocket(t *testing.T) {
	h := newHost(t, hostOptions{}) // started with --log-level debug
	ctl := func(args ...string) string {
		t.Helper()
		out, err := h.calyxctl("", append(args, "--agent-socket", h.socket)...)
		if err != nil {
			t.Fatalf("calyxctl %v: %v\n%s", args, err, out)
		}
		return out
	}
	if out := ctl("agent", "log-level"); strings.TrimSpace(out) != "debug" {
		t.Errorf("log level at start: %q, want debug", out)
	}
	if out := ctl("agent", "log-level", "warn"); !strings.Contains(out, "warn (was debug") {
		t.Errorf("changing the level: %q", out)
	}
	if out, err := h.calyxctl("", "agent", "log-level", "loud", "--agent-socket", h.socket); err == nil || !strings.Contains(out, `"loud"`) {
		t.Errorf("a bad level must fail naming it: %v %q", err, out)
	}
	// From now on no debug or info line: a workload's ADD and DEL log at
	// info and debug.
	logPath := filepath.Join(h.dir, "agent.log")
	before, _ := os.ReadFile(logPath)
	w := h.newWorkload("lvl")
	h.add(w)
	if o := h.cni("DEL", w, nil); o.err != nil {
		t.Fatal(o.err)
	}
	after, _ := os.ReadFile(logPath)
	for _, line := range strings.Split(string(after[len(before):]), "\n") {
		if strings.Contains(line, "level=DEBUG") || strings.Contains(line, "level=INFO") {
			t.Errorf("a line below warn after log-level warn: %s", line)
		}
	}
	if !strings.Contains(string(after), "log level changed at runtime") {
		t.Error("the change is not logged")
	}
	ctl("agent", "log-level", "debug")

	out := ctl("version")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "calyxctl: ") || !strings.HasPrefix(lines[1], "calyx-agent: ") {
		t.Fatalf("calyxctl version: %q", out)
	}
	// Built together, the two report the same build.
	if strings.TrimPrefix(lines[0], "calyxctl:    ") != strings.TrimPrefix(lines[1], "calyx-agent: ") {
		t.Errorf("client and agent builds differ: %q", out)
	}
	if out := ctl("version", "-o", "json"); !strings.Contains(out, `"agent": {`) || !strings.Contains(out, `"commit"`) {
		t.Errorf("calyxctl version -o json: %s", out)
	}
}
