package bgpbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// fabricBridge is the bridge inside the lab's fabric namespace. The lab
// keeps its name private; this copy must follow it (e2e/lab/fabric.go).
const fabricBridge = "br0"

// extraNamespace is a namespace this benchmark adds to a lab's fabric (the
// lab library plugs only its own members). Its name carries the lab's
// prefix, so that `calyx-lab down --dir DIR` also removes it should this
// process die before its own cleanup.
type extraNamespace struct {
	Name string
	Addr string
}

// plugExtra creates the namespace "<prefix>bb-<suffix>" with eth0 at addr
// on the lab's fabric: a veth pair made from inside the fabric namespace,
// so that no link ever appears in the root namespace.
func plugExtra(ctx context.Context, l *lab.Lab, suffix, addr string) (extraNamespace, error) {
	ns := extraNamespace{Name: l.Prefix() + "bb-" + suffix, Addr: addr}
	fabric, err := l.Namespace("fabric")
	if err != nil {
		return ns, err
	}
	port := "bb-" + suffix
	steps := [][]string{
		{"netns", "add", ns.Name},
		{"-n", ns.Name, "link", "set", "lo", "up"},
		{"-n", fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"-n", fabric, "link", "set", port, "master", fabricBridge, "up"},
		{"-n", ns.Name, "addr", "add", addr + "/" + strconv.Itoa(lab.FabricPrefixLen), "dev", "eth0"},
		{"-n", ns.Name, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return ns, fmt.Errorf("plugging %s into the lab fabric: %w", ns.Name, err)
		}
	}
	return ns, nil
}

// remove kills what still runs inside the namespace and deletes it (its
// veth pair goes with it). A missing namespace is fine.
func (n extraNamespace) remove() error {
	if _, err := os.Stat(benchkit.NetnsPath(n.Name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := run(ctx, "ip", "netns", "pids", n.Name); err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if _, err := run(ctx, "ip", "netns", "del", n.Name); err != nil {
		return fmt.Errorf("removing namespace %s: %w", n.Name, err)
	}
	return nil
}

func (n extraNamespace) path() string { return benchkit.NetnsPath(n.Name) }

// run runs a command and returns its trimmed output; the error carries it.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if err != nil {
		return text, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, text)
	}
	return text, nil
}
