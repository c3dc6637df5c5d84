package bgpbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// Profiling the scale host's agent during the first calyx round:
// CALYX_BENCH_PPROF_DIR=DIR starts the agents with --pprof-addr and writes
// DIR/cpu-install.pb.gz, heap-installed.pb.gz (every prefix in the kernel),
// cpu-withdraw.pb.gz and heap-withdrawn.pb.gz. Each CPU profile lasts
// CALYX_BENCH_PPROF_SECONDS (default 8), and the withdrawal starts only
// when the install's profile is done, so a profiled run's figures are not
// the ones to report. Read them with `go tool pprof bin/calyx-agent FILE`.

// pprofAddr is where the agents serve their profiles: loopback inside each
// host's namespace.
const pprofAddr = "127.0.0.1:6061"

// profileDir is CALYX_BENCH_PPROF_DIR: empty means no profiling.
func profileDir() string { return os.Getenv("CALYX_BENCH_PPROF_DIR") }

// profiler fetches profiles from one host's agent.
type profiler struct {
	dir    string
	secs   int
	client *http.Client
	log    *slog.Logger
	done   chan error // the CPU profile under way, if any
}

// newProfiler returns nil when profiling is off.
func newProfiler(l *lab.Lab, host string, log *slog.Logger) (*profiler, error) {
	dir := profileDir()
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("profile directory: %w", err)
	}
	secs := 8
	if v := os.Getenv("CALYX_BENCH_PPROF_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("CALYX_BENCH_PPROF_SECONDS %q: not a positive number of seconds", v)
		}
		secs = n
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return l.Dial(ctx, host, addr)
	}}
	return &profiler{dir: dir, secs: secs, client: &http.Client{Transport: tr}, log: log}, nil
}

// startCPU begins a CPU profile of p.secs seconds, written to name.
func (p *profiler) startCPU(ctx context.Context, name string) {
	if p == nil {
		return
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.fetch(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", p.secs), name) }()
	time.Sleep(100 * time.Millisecond) // the agent starts profiling on the request
}

// waitCPU waits for the CPU profile under way.
func (p *profiler) waitCPU() error {
	if p == nil || p.done == nil {
		return nil
	}
	err := <-p.done
	p.done = nil
	return err
}

// heap writes the live heap (after a GC) to name.
func (p *profiler) heap(ctx context.Context, name string) error {
	if p == nil {
		return nil
	}
	return p.fetch(ctx, "/debug/pprof/heap?gc=1", name)
}

func (p *profiler) fetch(ctx context.Context, path, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("profile %s: %s: %s", path, resp.Status, b)
	}
	out := filepath.Join(p.dir, name)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return errors.Join(fmt.Errorf("profile %s: %w", out, err), os.Remove(out))
	}
	p.log.Info("agent profile written", "file", out)
	return nil
}
