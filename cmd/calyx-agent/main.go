// Command calyx-agent is Calyx's per-node daemon. See docs/agent.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/agent"
	"github.com/calyx-net/calyx/internal/version"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println(version.String("calyx-agent"))
		return
	}
	if code, ok := runSubcommand(); ok {
		os.Exit(code)
	}
	cfg, err := agent.LoadConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		for _, line := range splitLines(err.Error()) {
			fmt.Fprintln(os.Stderr, "calyx-agent: "+line)
		}
		os.Exit(2)
	}
	// A soft memory limit: with 100k BGP routes the Go heap target would
	// otherwise let RSS reach ~2x the live heap. Above it the GC works
	// harder; it never fails an allocation. GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	level, _ := agent.ParseLogLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
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

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
