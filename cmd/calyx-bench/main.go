// Command calyx-bench runs Calyx's benchmarks, each beside its peer or
// limit measured in the same run, prints the table and writes
// bench/results.json (format in DESIGN.md). `make bench` runs it;
// `make bench QUICK=1` runs the short version.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/calyx-net/calyx/bench"
)

// suite is one area's benchmark.
type suite struct {
	name string
	run  func(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error)
}

type results struct {
	Machine  map[string]any `json:"machine"`
	Settings map[string]any `json:"settings"`
	Figures  []bench.Figure `json:"figures"`
	Errors   []string       `json:"errors,omitempty"`
}

func main() {
	quick := flag.Bool("quick", false, "short version of every benchmark")
	out := flag.String("out", "bench/results.json", "where to write the results")
	only := flag.String("only", "", "comma-separated suites to run (default all: "+suiteNames()+")")
	verbose := flag.Bool("v", false, "log progress")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "calyx-bench: must run as root (it builds network namespaces)")
		os.Exit(2)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	res := results{Machine: machine(), Settings: map[string]any{"quick": *quick, "started": time.Now().UTC().Format(time.RFC3339)}}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			want[s] = true
		}
	}
	for _, s := range suites {
		if len(want) > 0 && !want[s.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s\n", s.name)
		start := time.Now()
		figs, err := s.run(ctx, *quick, log.With("suite", s.name))
		res.Figures = append(res.Figures, figs...)
		if err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", s.name, err))
			fmt.Fprintf(os.Stderr, "   %s failed after %s: %v\n", s.name, time.Since(start).Round(time.Second), err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	printTable(res.Figures)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err == nil {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "calyx-bench:", err)
		}
	}
	if len(res.Errors) > 0 {
		os.Exit(1)
	}
}

func suiteNames() string {
	var names []string
	for _, s := range suites {
		names = append(names, s.name)
	}
	return strings.Join(names, ",")
}

func printTable(figs []bench.Figure) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "figure\tunit\tcalyx\tpeer\tpeer name\tratio\tgoal\tmet\t")
	for _, f := range figs {
		met := "yes"
		if !f.Met {
			met = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t\n", f.Name, f.Unit, num(f.Calyx), num(f.Peer), f.PeerName, f.Ratio, f.Goal, met)
	}
	tw.Flush()
	for _, f := range figs {
		if f.Notes != "" {
			fmt.Printf("  %s: %s\n", f.Name, f.Notes)
		}
	}
}

func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func machine() map[string]any {
	m := map[string]any{"cpus": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			m["memory"] = strings.Join(strings.Fields(line)[1:], " ")
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, v, _ := strings.Cut(l, ":")
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
