// Command calyx-lab emulates a multi-host Calyx cluster on one machine with
// network namespaces: a fabric, N hosts each running calyx-agent, one etcd,
// an optional BIRD top-of-rack router, and workloads wired through the real
// calyx CNI plugin. See docs/lab.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/e2e/lab"
)

const usage = `calyx-lab: a multi-host Calyx cluster on one machine (network namespaces)

Usage:
  calyx-lab up [--hosts N] [--workloads M] [--peer bird] [--reflectors K] [--etcd-members 1|3|5] [--pool CIDR]
               [--kubernetes [--kube-controllers N]]   the real kube-apiserver and calyx-kube-controllers too
  calyx-lab status [-o table|json]           json: hosts, workloads, etcd members, every process (name, pid, netns)
  calyx-lab add NAME --host H [--labels k=v,...]
  calyx-lab del NAME
  calyx-lab pod add NS/NAME --host H [--labels k=v,...] [--ports name:port/PROTO,...]   (--kubernetes labs)
  calyx-lab pod del NS/NAME                  sandbox (CNI DEL) then the API object, as kubelet does
  calyx-lab stop PROCESS [--kill]           PROCESS: etcdN, agent-hostN or kube-controllers[N] (--kill: SIGKILL, as a crash)
  calyx-lab start PROCESS                    starts it again (an etcd member: waits until it caught up)
  calyx-lab exec TARGET -- CMD [ARGS...]    TARGET: hostN, a workload, etcd (etcdN), tor, fabric
  calyx-lab ping [--all]                     reachability matrix of the workloads (--all: and hosts)
  calyx-lab down [--purge]                   removes everything; idempotent; recovers a crashed lab
  calyx-lab demo                             up, status, ping, policy, down (make demo)

Every command takes --dir DIR (default /run/calyx-lab/default, or $CALYX_LAB_DIR)
and -v for debug output. Binaries are found in --bin-dir (default: the
directory of calyx-lab itself, or $CALYX_BIN_DIR).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// globals are the flags every command takes.
type globals struct {
	dir     string
	verbose bool
}

func (g *globals) register(fs *pflag.FlagSet) {
	def := os.Getenv("CALYX_LAB_DIR")
	if def == "" {
		def = filepath.Join(lab.DefaultDirRoot, "default")
	}
	fs.StringVar(&g.dir, "dir", def, "lab directory (state, logs, sockets)")
	fs.BoolVarP(&g.verbose, "verbose", "v", false, "debug output")
}

func (g *globals) logger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // humans read this; the order says enough
			}
			return a
		},
	}))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmds := map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
		"up": cmdUp, "status": cmdStatus, "add": cmdAdd, "del": cmdDel,
		"exec": cmdExec, "ping": cmdPing, "down": cmdDown, "demo": cmdDemo,
		"stop": cmdStop, "start": cmdStart, "pod": cmdPod,
	}
	fn, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "calyx-lab: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	// Ctrl-C cancels the context; commands that build something tear it
	// down before they return. A second Ctrl-C is swallowed meanwhile, so
	// the clean-up is not cut short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	err := fn(ctx, args[1:], stdout, stderr)
	var exit exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	case errors.Is(err, pflag.ErrHelp):
		return 0
	}
	fmt.Fprintf(stderr, "calyx-lab %s: %s\n", args[0], strings.TrimSpace(err.Error()))
	return 1
}

// exitCode is an error that only sets the exit status (the command already
// said why).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// newFlags makes a flag set for one command with the global flags.
func newFlags(name string, g *globals, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("calyx-lab "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	g.register(fs)
	return fs
}

// requireRoot gives the one clear message every command that touches
// namespaces needs.
func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("calyx-lab needs root (it creates network namespaces): run it with sudo")
	}
	return nil
}
