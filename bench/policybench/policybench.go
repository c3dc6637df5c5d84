// Package policybench measures the policy Dataplane against raw
// iptables-restore of the same rendered text, in network namespaces it
// creates and removes itself. `make bench` calls Run.
package policybench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/netlab"
	"github.com/calyx-net/calyx/policy"
)

// sizes of one run.
type sizes struct {
	endpoints, policies, rules int
	rounds, updates            int
	churn                      time.Duration
}

// Run measures full programming at ~50k rules, one policy update at that
// scale, a new open endpoint at that scale (the CNI ADD path), and endpoint
// churn at 100 changes per second. quick shrinks it.
func Run(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if why := netlab.Available(); why != "" {
		return nil, fmt.Errorf("policy benchmark %s", why)
	}
	for _, bin := range []string{"iptables-restore", "ipset"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("policy benchmark needs %s: %w", bin, err)
		}
	}
	sz := sizes{endpoints: 200, policies: 500, rules: 80, rounds: 3, updates: 9, churn: 5 * time.Second}
	if quick {
		sz = sizes{endpoints: 50, policies: 100, rules: 40, rounds: 1, updates: 5, churn: 2 * time.Second}
	}
	lab := netlab.New("policybench")
	defer func() {
		if err := lab.Close(); err != nil {
			log.Warn("removing benchmark namespaces", "err", err)
		}
	}()
	b := &runner{ctx: ctx, lab: lab, log: log, sz: sz, sc: newScenario(sz.endpoints, sz.policies, sz.rules)}
	full, dp, ns, err := b.full()
	if err != nil {
		return nil, err
	}
	update, err := b.oneUpdate(dp, ns)
	if err != nil {
		return nil, err
	}
	open, err := b.openEndpoint(dp)
	if err != nil {
		return nil, err
	}
	churn, err := b.churn(dp)
	if err != nil {
		return nil, err
	}
	return []bench.Figure{full, update, open, churn}, nil
}

type runner struct {
	ctx       context.Context
	lab       *netlab.Lab
	log       *slog.Logger
	sz        sizes
	sc        *scenario
	nsSeq     int
	ruleCount int // of the rendered scenario, IPv4
}

func (b *runner) freshNS() (string, error) {
	b.nsSeq++
	return b.lab.NS(b.ctx, fmt.Sprintf("n%d", b.nsSeq))
}

func (b *runner) newDataplane(ns string) (*policy.Dataplane, error) {
	return policy.New(policy.Config{NodeName: "bench", CommandPrefix: []string{"ip", "netns", "exec", ns}}, b.log)
}

// programCalyx sets the whole scenario on a new Dataplane and applies it.
func (b *runner) programCalyx(ns string) (*policy.Dataplane, time.Duration, error) {
	start := time.Now()
	dp, err := b.newDataplane(ns)
	if err != nil {
		return nil, 0, err
	}
	if err := b.load(dp); err != nil {
		return nil, 0, err
	}
	return dp, time.Since(start), nil
}

// load sets the whole scenario on a Dataplane and applies it.
func (b *runner) load(dp *policy.Dataplane) error {
	for _, w := range b.sc.endpoints {
		if err := dp.SetEndpoint(w); err != nil {
			return err
		}
	}
	for _, p := range b.sc.policies {
		if err := dp.SetPolicy(p); err != nil {
			return err
		}
	}
	if err := dp.SetPools(b.sc.pools); err != nil {
		return err
	}
	return dp.Apply(b.ctx)
}

// programRaw loads the same rendered text with the raw tools: one ipset
// restore and one iptables-restore holding every table (what the
// Dataplane runs on a first write).
func (b *runner) programRaw(ns string, r *policy.Rendered) (time.Duration, error) {
	sets := policy.RenderSets(r.Sets())
	var tables strings.Builder
	for _, t := range []policy.Table{policy.TableRaw, policy.TableNAT, policy.TableFilter} {
		tables.WriteString(r.RestoreText(policy.V4, t))
	}
	start := time.Now()
	if err := runStdin(b.ctx, sets, "ip", "netns", "exec", ns, "ipset", "-exist", "restore"); err != nil {
		return 0, err
	}
	if err := runStdin(b.ctx, tables.String(), "ip", "netns", "exec", ns, "iptables-restore", "--noflush", "-w"); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func runStdin(ctx context.Context, stdin string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// full alternates the two sides, each into a fresh namespace, and keeps the
// last Dataplane (and its namespace) for the next measurements.
func (b *runner) full() (bench.Figure, *policy.Dataplane, string, error) {
	r, err := policy.Render(policy.Config{NodeName: "bench"}, b.sc.policies, b.sc.endpoints, b.sc.pools)
	if err != nil {
		return bench.Figure{}, nil, "", err
	}
	b.ruleCount = r.RuleCount()
	var calyx, raw []float64
	var dp *policy.Dataplane
	var dpNS string
	for round := range b.sz.rounds {
		for _, side := range []string{"calyx", "raw"} {
			if round%2 == 1 { // alternate which side goes first
				side = map[string]string{"calyx": "raw", "raw": "calyx"}[side]
			}
			ns, err := b.freshNS()
			if err != nil {
				return bench.Figure{}, nil, "", err
			}
			switch side {
			case "calyx":
				d, took, err := b.programCalyx(ns)
				if err != nil {
					return bench.Figure{}, nil, "", err
				}
				calyx = append(calyx, took.Seconds())
				dp, dpNS = d, ns
			case "raw":
				took, err := b.programRaw(ns, r)
				if err != nil {
					return bench.Figure{}, nil, "", err
				}
				raw = append(raw, took.Seconds())
			}
		}
	}
	f := bench.NewRatio(bench.Figure{
		Name: "policy_full_50k", Unit: "s",
		Calyx: benchkit.Median(calyx), Peer: benchkit.Median(raw), PeerName: "raw ipset restore + iptables-restore of the same text",
		Goal: "ratio <= 1.2",
		Notes: fmt.Sprintf("%d endpoints x %d policies x %d rules = %d iptables rules (IPv4); calyx includes setting the model, rendering and reading the kernel first; medians of %d",
			b.sz.endpoints, b.sz.policies, b.sz.rules, r.RuleCount(), b.sz.rounds),
	})
	f.Met = f.Ratio <= 1.2
	return f, dp, dpNS, nil
}

// oneUpdate changes one policy's rules at full scale and times until the
// write returned (the kernel has it), beside a raw restore of that chain.
func (b *runner) oneUpdate(dp *policy.Dataplane, ns string) (bench.Figure, error) {
	var calyx, raw []float64
	for i := range b.sz.updates {
		p := benchPolicy(7, b.sz.rules, i+1)
		start := time.Now()
		if err := dp.SetPolicy(p); err != nil {
			return bench.Figure{}, err
		}
		if err := dp.Apply(b.ctx); err != nil {
			return bench.Figure{}, err
		}
		calyx = append(calyx, float64(time.Since(start).Microseconds())/1000)

		r, err := policy.Render(policy.Config{NodeName: "bench"}, []*datastore.Policy{p}, b.sc.endpoints, nil)
		if err != nil {
			return bench.Figure{}, err
		}
		var chain *policy.Chain
		for _, c := range r.Chains(policy.V4, policy.TableFilter) {
			if strings.HasPrefix(c.Name, "cx-pi-") {
				chain = c
			}
		}
		if chain == nil {
			return bench.Figure{}, errors.New("no policy chain rendered")
		}
		text := "*filter\n:" + chain.Name + " - [0:0]\n" + strings.Join(chain.Lines, "\n") + "\nCOMMIT\n"
		start = time.Now()
		if err := runStdin(b.ctx, text, "ip", "netns", "exec", ns, "iptables-restore", "--noflush", "-w"); err != nil {
			return bench.Figure{}, err
		}
		raw = append(raw, float64(time.Since(start).Microseconds())/1000)
	}
	f := bench.NewRatio(bench.Figure{
		Name: "policy_one_update_50k_ms", Unit: "ms",
		Calyx: benchkit.Median(calyx), Peer: benchkit.Median(raw), PeerName: "raw iptables-restore --noflush of that chain",
		Goal:  "<= 50 ms",
		Notes: fmt.Sprintf("one policy's %d rules changed, SetPolicy+Apply until iptables-restore returned; medians of %d", b.sz.rules, b.sz.updates),
	})
	f.Met = f.Calyx <= 50
	return f, nil
}

// openEndpoint times what the CNI ADD path waits for: SetEndpoint and
// ProgramEndpoint of a new endpoint that no policy selects, whose set
// members go over netlink, beside the same change applied by a Dataplane
// that writes sets with ipset restore (built with NewWithRunner and no
// NetNS), alternating. The notes add a new selected endpoint, whose chains
// take iptables-restore: what every new endpoint cost before the open sets.
func (b *runner) openEndpoint(dp *policy.Dataplane) (bench.Figure, error) {
	ns, err := b.freshNS()
	if err != nil {
		return bench.Figure{}, err
	}
	prefix := []string{"ip", "netns", "exec", ns}
	peer, err := policy.NewWithRunner(policy.Config{NodeName: "bench", CommandPrefix: prefix}, b.log, policy.ExecRunner{Prefix: prefix})
	if err != nil {
		return bench.Figure{}, err
	}
	if err := b.load(peer); err != nil {
		return bench.Figure{}, err
	}
	program := func(d *policy.Dataplane, w *datastore.WorkloadEndpoint) (float64, error) {
		start := time.Now()
		if err := d.SetEndpoint(w); err != nil {
			return 0, err
		}
		if err := d.ProgramEndpoint(b.ctx, w.Metadata.Name); err != nil {
			return 0, err
		}
		return float64(time.Since(start).Microseconds()) / 1000, nil
	}
	var calyx, raw, selected []float64
	fast := 0 // open rounds that wrote members over netlink and no chain
	for i := range b.sz.updates {
		w := extraEndpoint("open", i, map[string]string{"app": "batch", "env": "dev"})
		for k, d := range []*policy.Dataplane{dp, peer} {
			if i%2 == 1 {
				d = []*policy.Dataplane{peer, dp}[k]
			}
			st := dp.Stats()
			took, err := program(d, w)
			if err != nil {
				return bench.Figure{}, err
			}
			if d == dp {
				if after := dp.Stats(); after.NetlinkWrites == st.NetlinkWrites+1 && after.ChainsWritten == st.ChainsWritten {
					fast++
				}
				calyx = append(calyx, took)
			} else {
				raw = append(raw, took)
			}
		}
		sel := extraEndpoint("sel", i, map[string]string{"app": fmt.Sprintf("app-%d", i%benchApps), "env": "prod"})
		took, err := program(dp, sel)
		if err != nil {
			return bench.Figure{}, err
		}
		selected = append(selected, took)
		for _, d := range []*policy.Dataplane{dp, peer} {
			d.DeleteEndpoint(w.Metadata.Name)
			d.DeleteEndpoint(sel.Metadata.Name)
			if err := d.Apply(b.ctx); err != nil {
				return bench.Figure{}, err
			}
		}
	}
	f := bench.NewRatio(bench.Figure{
		Name: "policy_open_endpoint_add_ms", Unit: "ms",
		Calyx: benchkit.Median(calyx), Peer: benchkit.Median(raw), PeerName: "the same change applied with ipset restore (a process)",
		Goal: "<= 2 ms and no process",
		Notes: fmt.Sprintf("new endpoint no policy selects, SetEndpoint+ProgramEndpoint on the %d-rule scenario: %d of %d over netlink; "+
			"a new selected endpoint (chains by iptables-restore) took %.1f ms; medians of %d",
			b.ruleCount, fast, b.sz.updates, benchkit.Median(selected), b.sz.updates),
	})
	f.Met = f.Calyx <= 2 && fast == b.sz.updates
	return f, nil
}

// extraEndpoint is an endpoint outside the scenario's range of names,
// interfaces and addresses.
func extraEndpoint(kind string, i int, labels map[string]string) *datastore.WorkloadEndpoint {
	third, hexDigit := 250, "e"
	if kind == "sel" {
		third, hexDigit = 251, "f"
	}
	return &datastore.WorkloadEndpoint{
		Metadata: datastore.Metadata{Name: fmt.Sprintf("%s-%d", kind, i), Labels: labels},
		Spec: datastore.WorkloadEndpointSpec{
			Node:          "bench",
			InterfaceName: fmt.Sprintf("cx%s%010x", hexDigit, i),
			IPNetworks:    []string{fmt.Sprintf("10.244.%d.%d/32", third, i%250+1)},
		},
	}
}

// churn adds and removes endpoints at 100 per second while a loop applies
// whatever is pending, like Dataplane.Run does.
func (b *runner) churn(dp *policy.Dataplane) (bench.Figure, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.sz.churn+30*time.Second)
	defer cancel()
	pending := make(chan int, 100000) // ops issued, read by the applier
	produced := 0
	prodErr := make(chan error, 1)
	go func() {
		defer close(pending)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		stop := time.After(b.sz.churn)
		next := b.sz.endpoints
		var live []int
		for {
			select {
			case <-stop:
				prodErr <- nil
				return
			case <-ctx.Done():
				prodErr <- ctx.Err()
				return
			case <-tick.C:
			}
			if len(live) > 20 || (len(live) > 0 && produced%2 == 1) {
				dp.DeleteEndpoint(benchEndpoint(live[0]).Metadata.Name)
				live = live[1:]
			} else {
				if err := dp.SetEndpoint(benchEndpoint(next)); err != nil {
					prodErr <- err
					return
				}
				live = append(live, next)
				next++
			}
			produced++
			pending <- produced
		}
	}()
	var applies []float64
	maxBacklog, applied := 0, 0
	for open := true; open; {
		// Wait for at least one change, then take everything queued.
		n, ok := <-pending
		if !ok {
			break
		}
		latest := n
	drain:
		for {
			select {
			case m, ok := <-pending:
				if !ok {
					open = false
					break drain
				}
				latest = m
			default:
				break drain
			}
		}
		maxBacklog = max(maxBacklog, latest-applied)
		start := time.Now()
		if err := dp.Apply(ctx); err != nil {
			return bench.Figure{}, err
		}
		applies = append(applies, float64(time.Since(start).Microseconds())/1000)
		applied = latest
	}
	if err := <-prodErr; err != nil {
		return bench.Figure{}, err
	}
	if len(applies) == 0 {
		return bench.Figure{}, fmt.Errorf("churn: no apply measured in %v", b.sz.churn)
	}
	p99 := benchkit.Percentile(applies, 99)
	f := bench.NewRatio(bench.Figure{
		Name: "policy_churn_apply_p99_ms", Unit: "ms",
		Calyx: p99, Peer: 1000, PeerName: "limit: one second of churn applied within a second",
		Goal: "p99 <= 1000 ms",
		Notes: fmt.Sprintf("%d endpoint adds/removes at 100/s over %v on top of the full scenario: %d applies, max backlog %d changes, apply ms p50 %.1f p90 %.1f p99 %.1f max %.1f; histogram %s",
			produced, b.sz.churn, len(applies), maxBacklog, benchkit.Percentile(applies, 50), benchkit.Percentile(applies, 90), p99,
			slices.Max(append(applies, 0)), histogram(applies)),
	})
	f.Met = p99 <= 1000
	return f, nil
}

// histogram buckets apply times in ms: "<10:n <25:n ...".
func histogram(xs []float64) string {
	bounds := []float64{10, 25, 50, 100, 250, 1000}
	counts := make([]int, len(bounds)+1)
	for _, x := range xs {
		i := 0
		for i < len(bounds) && x >= bounds[i] {
			i++
		}
		counts[i]++
	}
	var parts []string
	for i, b := range bounds {
		parts = append(parts, fmt.Sprintf("<%g:%d", b, counts[i]))
	}
	parts = append(parts, fmt.Sprintf(">=%g:%d", bounds[len(bounds)-1], counts[len(bounds)]))
	return strings.Join(parts, " ")
}
