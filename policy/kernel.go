package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Runner runs one command with stdin and returns its standard output. The
// Dataplane reaches the kernel only through it, so unit tests can inject a
// fake with failures.
type Runner interface {
	Run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error)
}

// ExecRunner runs commands as child processes, each prefixed with Prefix
// (e.g. "ip netns exec NAME").
type ExecRunner struct {
	Prefix []string
}

func (r ExecRunner) Run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	full := append(append([]string(nil), r.Prefix...), argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, firstLines(errOut.String(), 5))
	}
	return out.Bytes(), nil
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(strings.TrimSpace(s), "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "; ")
}

// binaries names the iptables tools of one backend and family.
type binaries struct {
	restore, save string
}

func iptablesBinaries(b Backend, f Family) binaries {
	base := "iptables"
	if f == V6 {
		base = "ip6tables"
	}
	switch b {
	case BackendNFT:
		base += "-nft"
	case BackendLegacy:
		base += "-legacy"
	}
	return binaries{restore: base + "-restore", save: base + "-save"}
}

// kernel wraps the commands the Dataplane runs.
type kernel struct {
	run      Runner
	backend  Backend
	lockWait int // seconds iptables waits for the xtables lock (-w)
}

// commandDeadline ends any one command that hangs (ipset has no lock
// to wait for, but a stuck child must not stall the policy loop forever).
const commandDeadline = time.Minute

// errXtablesLock marks a write that gave up waiting for the xtables lock.
var errXtablesLock = errors.New("the xtables lock is held by another program")

func (k *kernel) iptablesRestore(ctx context.Context, f Family, text string) error {
	ctx, cancel := context.WithTimeout(ctx, commandDeadline)
	defer cancel()
	_, err := k.run.Run(ctx, []byte(text), iptablesBinaries(k.backend, f).restore, "--noflush", "-w", strconv.Itoa(k.lockWait))
	if err != nil && strings.Contains(err.Error(), "xtables lock") {
		// iptables says "Another app is currently holding the xtables
		// lock. Stopped waiting after Ns."
		return fmt.Errorf("%w for more than %ds (XTABLES_LOCKFILE, default /run/xtables.lock): %w", errXtablesLock, k.lockWait, err)
	}
	return err
}

// iptablesSave dumps every table of a family in one call.
func (k *kernel) iptablesSave(ctx context.Context, f Family) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandDeadline)
	defer cancel()
	return k.run.Run(ctx, nil, iptablesBinaries(k.backend, f).save)
}

func (k *kernel) ipsetRestore(ctx context.Context, text string) error {
	ctx, cancel := context.WithTimeout(ctx, commandDeadline)
	defer cancel()
	_, err := k.run.Run(ctx, []byte(text), "ipset", "-exist", "restore")
	return err
}

func (k *kernel) ipsetSave(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandDeadline)
	defer cancel()
	return k.run.Run(ctx, nil, "ipset", "save")
}
