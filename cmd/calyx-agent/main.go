// Command calyx-agent is Calyx's per-node daemon. See docs/agent.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/agent"
	"github.com/calyx-net/calyx/internal/version"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && (args[0] == "version" || args[0] == "--version") {
		fmt.Println(version.String("calyx-agent"))
		return
	}
	if code, ok := runSubcommand(); ok {
		os.Exit(code)
	}
	cfg, ok := loadConfig(args, os.Stdout, os.Stderr)
	if !ok {
		os.Exit(2)
	}
	if cfg == nil {
		return // --help
	}
	// A soft memory limit: with 100k BGP routes the Go heap target would
	// otherwise let RSS reach ~2x the live heap. Above it the GC works
	// harder; it never fails an allocation. GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := agent.NewLogger(os.Stderr, cfg.LogFormat, level)
	log.Info(version.String("calyx-agent"))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := agent.Run(ctx, cfg, log); err != nil {
		log.Error("calyx-agent failed", "err", err)
		os.Exit(1)
	}
}

// defaultMemoryLimit is the soft Go memory limit unless GOMEMLIMIT is set.
const defaultMemoryLimit = 256 << 20

// loadConfig loads the settings, printing what is wrong; nil and true
// after --help.
func loadConfig(args []string, stdout, stderr io.Writer) (*agent.Config, bool) {
	cfg, err := agent.LoadConfig(args, os.Getenv)
	if errors.Is(err, pflag.ErrHelp) {
		agent.Usage(stdout)
		return nil, true
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "calyx-agent: "+line)
		}
		return nil, false
	}
	return cfg, true
}

// configCommand prints every effective setting and its source:
// `calyx-agent config [settings] [-o json]`.
func configCommand(args []string, stdout, stderr io.Writer) int {
	format, rest, err := outputFlag(args)
	if err != nil {
		fmt.Fprintln(stderr, "calyx-agent config:", err)
		return 2
	}
	cfg, ok := loadConfig(rest, stdout, stderr)
	if !ok {
		return 2
	}
	if cfg == nil {
		return 0
	}
	if err := cfg.PrintEffective(stdout, format); err != nil {
		fmt.Fprintln(stderr, "calyx-agent config:", err)
		return 2
	}
	return 0
}

// outputFlag takes -o/--output FORMAT out of args (the rest are settings).
func outputFlag(args []string) (format string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "--output":
			if i+1 == len(args) {
				return "", nil, fmt.Errorf("%s needs a value (table or json)", a)
			}
			format = args[i+1]
			i++
		case strings.HasPrefix(a, "--output="):
			format = strings.TrimPrefix(a, "--output=")
		case strings.HasPrefix(a, "-o"):
			format = strings.TrimPrefix(strings.TrimPrefix(a, "-o"), "=")
		default:
			rest = append(rest, a)
		}
	}
	return format, rest, nil
}
