package cleanup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// ipsets destroys every cx- set. A set still referenced (by a rule of
// someone else's, or by a list:set) cannot go: the others are destroyed,
// then it is tried again while that makes progress, and whatever is left
// is an error naming it.
func (c *cleaner) ipsets(ctx context.Context) error {
	if _, err := exec.LookPath("ipset"); err != nil {
		return nil // no ipset tool: the agent could not have made sets
	}
	out, err := runCmd(ctx, "ipset", "list", "-n")
	if err != nil {
		return fmt.Errorf("listing ipsets: %w", err)
	}
	var left []string
	for _, name := range strings.Fields(out) {
		if strings.HasPrefix(name, ownPrefix) && c.wantsSet(ctx, name) {
			left = append(left, name)
		}
	}
	if c.o.DryRun {
		for _, name := range left {
			c.report.Sets++
			c.did("ipset %s", name)
		}
		return nil
	}
	for len(left) > 0 {
		var again []string
		var errs []error
		for _, name := range left {
			if _, err := runCmd(ctx, "ipset", "destroy", name); err != nil {
				again = append(again, name)
				errs = append(errs, fmt.Errorf("destroying ipset %s: %w", name, err))
				continue
			}
			c.report.Sets++
			c.did("ipset %s", name)
		}
		if len(again) == len(left) {
			return errors.Join(errs...)
		}
		left = again
	}
	return nil
}

// wantsSet reports whether a set's family is one being cleaned.
func (c *cleaner) wantsSet(ctx context.Context, name string) bool {
	if c.o.Only == Both {
		return true
	}
	hdr, err := runCmd(ctx, "ipset", "list", "-t", name)
	if err != nil {
		return false
	}
	v6 := strings.Contains(hdr, "family inet6")
	return v6 == (c.o.Only == IPv6)
}

func runCmd(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
