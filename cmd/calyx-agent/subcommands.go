package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/agent"
	"github.com/calyx-net/calyx/agent/cleanup"
	"github.com/calyx-net/calyx/cni/client"
	"github.com/calyx-net/calyx/cni/install"
)

// subcommands are the one-shot verbs of calyx-agent (the daemon is the
// default). Each returns the process exit status.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"install-cni": runInstallCNI,
	"config":      configCommand,
	"help":        func(_ []string, stdout, _ io.Writer) int { agent.Usage(stdout); return 0 },
	"cleanup":     runCleanup,
}

// parseSubcommand parses a verb's flags; done means exit with code.
func parseSubcommand(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: calyx-agent %s [flags]\n", fs.Name())
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0, true
		}
		fmt.Fprintf(stderr, "calyx-agent %s: %v\n", fs.Name(), err)
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "calyx-agent %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, true
	}
	return 0, false
}

func runInstallCNI(args []string, stdout, stderr io.Writer) int {
	var o install.Options
	fs := install.FlagSet(&o)
	if code, done := parseSubcommand(fs, args, stdout, stderr); done {
		return code
	}
	acts, err := install.Install(o)
	for _, a := range acts {
		fmt.Fprintln(stdout, a)
	}
	if err != nil {
		fmt.Fprintf(stderr, "calyx-agent install-cni: %v\n", err)
		return 1
	}
	return 0
}

// runSubcommand runs os.Args[1] when it is a subcommand; ok is false
// when it is not (the daemon then parses the arguments as its flags).
func runSubcommand() (code int, ok bool) {
	if len(os.Args) < 2 {
		return 0, false
	}
	run, ok := subcommands[os.Args[1]]
	if !ok {
		return 0, false
	}
	return run(os.Args[2:], os.Stdout, os.Stderr), true
}

func runCleanup(args []string, stdout, stderr io.Writer) int {
	o := cleanup.Options{Out: stdout}
	var family, confDir, binDir string
	var force bool
	fs := pflag.NewFlagSet("cleanup", pflag.ContinueOnError)
	fs.BoolVar(&o.Workloads, "workloads", false, "also delete the workload veths (cx…), cutting every workload on this node off")
	fs.BoolVar(&o.DryRun, "dry-run", false, "list what would be removed, remove nothing")
	fs.StringVar(&family, "family", "all", "IP versions to clean: 4, 6 or all")
	fs.StringVar(&o.IptablesBackend, "iptables-backend", "auto", "auto, nft or legacy")
	fs.StringVar(&o.AgentSocket, "agent-socket", client.DefaultSocket, "refuse to run while an agent answers here")
	fs.BoolVar(&force, "force", false, "run even though an agent answers on --agent-socket")
	fs.StringVar(&confDir, "cni-conf-dir", "", "also remove Calyx's conflists from this directory (e.g. /etc/cni/net.d)")
	fs.StringVar(&binDir, "cni-bin-dir", "", "also remove the calyx plugin from this directory (e.g. /opt/cni/bin)")
	if code, done := parseSubcommand(fs, args, stdout, stderr); done {
		return code
	}
	switch family {
	case "all":
	case "4":
		o.Only = cleanup.IPv4
	case "6":
		o.Only = cleanup.IPv6
	default:
		fmt.Fprintf(stderr, "calyx-agent cleanup: --family %q: want 4, 6 or all\n", family)
		return 2
	}
	if force {
		o.AgentSocket = ""
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	code := 0
	// The CNI configuration first: once it is gone no new workload starts.
	if (confDir != "" || binDir != "") && !o.DryRun {
		acts, err := install.Uninstall(confDir, binDir, "")
		for _, a := range acts {
			fmt.Fprintln(stdout, a)
		}
		if err != nil {
			fmt.Fprintf(stderr, "calyx-agent cleanup: %v\n", err)
			code = 1
		}
	}
	rep, err := cleanup.Run(ctx, o)
	verb := "removed"
	if o.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(stdout, "cleanup: %s %s\n", verb, rep)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "calyx-agent cleanup: %s\n", line)
		}
		return 1
	}
	return code
}
