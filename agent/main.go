package agent

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

	"github.com/calyx-net/calyx/internal/version"
)

// defaultMemoryLimit is the soft Go memory limit unless GOMEMLIMIT is set.
const defaultMemoryLimit = 256 << 20

// Main runs the daemon with args (its settings) until SIGTERM or SIGINT
// and returns the exit status. cmd/calyx-agent calls it; the tests' build
// of the agent calls it with hooks as options.
func Main(args []string, opts ...Option) int {
	cfg, code, done := LoadOrExplain(args, os.Stdout, os.Stderr)
	if done {
		return code
	}
	// A soft memory limit: with 100k BGP routes the Go heap target would
	// otherwise let RSS reach ~2x the live heap. Above it the GC works
	// harder; it never fails an allocation. GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := NewLogger(os.Stderr, cfg.LogFormat, level)
	log.Info(version.String("calyx-agent"))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := Run(ctx, cfg, log, append([]Option{WithLogLevel(level)}, opts...)...); err != nil {
		log.Error("calyx-agent failed", "err", err)
		return 1
	}
	return 0
}

// LoadOrExplain loads the settings from args and the environment. After
// --help (usage on stdout) or a bad setting (each problem on stderr) done
// is true and code is the exit status.
func LoadOrExplain(args []string, stdout, stderr io.Writer) (cfg *Config, code int, done bool) {
	cfg, err := LoadConfig(args, os.Getenv)
	if errors.Is(err, pflag.ErrHelp) {
		Usage(stdout)
		return nil, 0, true
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "calyx-agent: "+line)
		}
		return nil, 2, true
	}
	return cfg, 0, false
}
