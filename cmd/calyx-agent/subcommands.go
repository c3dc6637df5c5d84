package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/agent"
	"github.com/calyx-net/calyx/cni/install"
)

// subcommands are the one-shot verbs of calyx-agent (the daemon is the
// default). Each returns the process exit status.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"install-cni": runInstallCNI,
	"config":      configCommand,
	"help":        func(_ []string, stdout, _ io.Writer) int { agent.Usage(stdout); return 0 },
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
