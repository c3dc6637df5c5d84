package cnibench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// A process execs a CNI plugin in its own network namespace, and ptp takes
// that namespace as the host. So every timed call runs on a goroutine locked
// to an OS thread that has entered the lab host's namespace, as a runtime
// living in that host would. (A private copy of the idea in e2e/lab.)

func netnsPath(name string) string { return "/run/netns/" + name }

// inNetns runs fn on a fresh goroutine locked to an OS thread inside the
// namespace and waits for it. If the way back fails, the thread stays
// locked and the runtime discards it with the goroutine.
func inNetns(name string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- enterAndRun(name, fn) }()
	return <-done
}

func enterAndRun(name string, fn func() error) (err error) {
	target, err := os.Open(netnsPath(name))
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", name, err)
	}
	defer func() {
		if backErr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); backErr != nil {
			err = errors.Join(err, fmt.Errorf("leaving network namespace %s: %w", name, backErr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// addNetns creates the namespaces with one `ip -batch` (outside any timed
// section: a runtime makes the sandbox before it calls CNI).
func addNetns(ctx context.Context, names []string) error {
	return ipBatch(ctx, false, "netns add", names)
}

// delNetns deletes the namespaces, best effort for each (a missing one is
// fine); it takes its own context so that it also runs after a Ctrl-C.
func delNetns(names []string) error {
	var left []string
	for _, n := range names {
		if _, err := os.Stat(netnsPath(n)); err == nil {
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
