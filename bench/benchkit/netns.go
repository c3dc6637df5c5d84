package benchkit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// NetnsPath is where `ip netns add NAME` puts the namespace; code runs
// inside one with routes/netns.Do(NetnsPath(name), fn).
func NetnsPath(name string) string { return "/run/netns/" + name }

// AddNetns creates the namespaces with one `ip -batch` (outside any timed
// section: a runtime makes the sandbox before it calls CNI).
func AddNetns(ctx context.Context, names []string) error {
	return ipBatch(ctx, false, "netns add", names)
}

// DelNetns deletes the namespaces, best effort for each (a missing one is
// fine); it takes its own context so that it also runs after a Ctrl-C.
func DelNetns(names []string) error {
	var left []string
	for _, n := range names {
		if _, err := os.Stat(NetnsPath(n)); err == nil {
			left = append(left, n)
		}
	}
	return ipBatch(context.Background(), true, "netns del", left)
}

func ipBatch(ctx context.Context, force bool, verb string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	var in bytes.Buffer
	for _, n := range names {
		fmt.Fprintf(&in, "%s %s\n", verb, n)
	}
	args := []string{"-batch", "-"}
	if force {
		args = append([]string{"-force"}, args...)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s (%d namespaces): %w: %s", verb, len(names), err, strings.TrimSpace(string(out)))
	}
	return nil
}
