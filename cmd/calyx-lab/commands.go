package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

func cmdUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("up", &g, stderr)
	o := lab.Options{}
	fs.IntVar(&o.Hosts, "hosts", 2, "number of hosts")
	fs.IntVar(&o.Workloads, "workloads", 0, "workloads to create on every host")
	fs.StringVar(&o.Peer, "peer", "", `external BGP peer: "bird" for a BIRD top-of-rack router`)
	fs.IntVar(&o.Reflectors, "reflectors", 0, "make hosts 1..K route reflectors (mesh off)")
	fs.IntVar(&o.EtcdMembers, "etcd-members", 1, "etcd cluster size: 1, 3 or 5 members, each in its own namespace")
	fs.StringVar(&o.Pool, "pool", lab.DefaultPool, "workload IPPool")
	fs.BoolVar(&o.IPv6, "ipv6", false, "dual stack: IPv6 on the fabric and hosts, an IPv6 pool, agents with --node-ipv6, IPv6 sessions to the ToR")
	fs.StringVar(&o.Pool6, "pool6", "", "IPv6 workload IPPool with --ipv6 (default "+lab.DefaultPool6+")")
	fs.StringVar(&o.BinDir, "bin-dir", lab.DefaultBinDir(), "directory of calyx-agent, calyx and calyxctl")
	fs.StringSliceVar(&o.AgentArgs, "agent-arg", nil, "extra flag for every agent (repeatable)")
	fs.StringVar(&o.AgentLogLevel, "agent-log-level", "info", "agents' --log-level")
	fs.BoolVar(&o.Kubernetes, "kubernetes", false, "run the real kube-apiserver (make kube-apiserver) and calyx-kube-controllers; agents get a kubeconfig; workloads are pods (calyx-lab pod)")
	fs.IntVar(&o.KubeControllers, "kube-controllers", 0, "calyx-kube-controllers replicas with --kubernetes (default 1; one leads)")
	fs.StringSliceVar(&o.KubeControllerArgs, "kube-controllers-arg", nil, "extra flag for every calyx-kube-controllers (repeatable)")
	fs.BoolVar(&o.SkipAgents, "skip-agents", false, "start no agent (to test the lab itself)")
	_ = fs.MarkHidden("skip-agents")
	wait := fs.Duration("wait", 60*time.Second, "wait this long for every BGP session to be Established and every workload route to be in every host's kernel (0: do not wait)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if o.Hosts < 1 {
		return fmt.Errorf("--hosts %d: want at least 1", o.Hosts)
	}
	o.Dir = g.dir
	o.Logger = g.logger(stderr)
	start := time.Now()
	l, err := lab.Up(ctx, o)
	if err != nil {
		return err
	}
	if *wait > 0 && !o.SkipAgents {
		wctx, cancel := context.WithTimeout(ctx, *wait)
		err := l.WaitEstablished(wctx)
		if err == nil {
			// So that a `ping` right after `up` finds every route.
			err = l.WaitRoutes(wctx)
		}
		cancel()
		if ctx.Err() != nil {
			// Interrupted while waiting: the user wants nothing left.
			return errors.Join(fmt.Errorf("interrupted"), l.Teardown())
		}
		if err != nil {
			fmt.Fprintf(stderr, "calyx-lab up: warning: %v\n", err)
		}
	}
	fmt.Fprintf(stdout, "lab up in %s: %d hosts, %d workloads, dir %s, prefix %s\n",
		time.Since(start).Round(100*time.Millisecond), len(l.Hosts()), len(l.Workloads()), l.Dir(), l.Prefix())
	fmt.Fprintf(stdout, "next: calyx-lab status | calyx-lab ping | calyx-lab exec host1 -- calyxctl node status | calyx-lab down\n")
	if o.Kubernetes {
		fmt.Fprintf(stdout, "Kubernetes API %s (CA %s/pki/ca.crt), admin kubeconfig %s (reach it from a lab namespace: calyx-lab exec host1 -- kubectl --kubeconfig ...)\n",
			lab.KubeAPIServerURL, l.Dir(), lab.KubeconfigPath(l.Dir(), "admin"))
		fmt.Fprintf(stdout, "pods: calyx-lab pod add NS/NAME --host host1 --labels app=web --ports http:80/TCP\n")
	}
	return nil
}

// open attaches to the lab of the --dir flag.
func open(g *globals, stderr io.Writer) (*lab.Lab, error) {
	if err := requireRoot(); err != nil {
		return nil, err
	}
	return lab.Open(g.dir, g.logger(stderr))
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("status", &g, stderr)
	output := fs.StringP("output", "o", "table", "table or json (hosts, workloads, etcd members and every process with its pid and namespace)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	if *output == "json" {
		b, err := json.MarshalIndent(l.Status(ctx), "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	printStatus(ctx, l, stdout)
	return nil
}

func printStatus(ctx context.Context, l *lab.Lab, w io.Writer) {
	o := l.Options()
	fmt.Fprintf(w, "lab %s (prefix %s): %d hosts, pool %s", l.Dir(), l.Prefix(), o.Hosts, o.Pool)
	if o.IPv6 {
		fmt.Fprintf(w, ", IPv6 pool %s", o.Pool6)
	}
	if o.Reflectors > 0 {
		fmt.Fprintf(w, ", %d route reflectors", o.Reflectors)
	}
	if o.Peer != "" {
		fmt.Fprintf(w, ", %s peer at %s", o.Peer, lab.TorIP)
		if o.IPv6 {
			fmt.Fprintf(w, " and %s", lab.TorIPv6)
		}
	}
	fmt.Fprintln(w)
	procs := map[string]lab.Proc{}
	for _, p := range l.Processes() {
		procs[p.Name] = p
	}
	procState := func(name string) string {
		p, ok := procs[name]
		switch {
		case !ok:
			return "not started"
		case p.Alive():
			return fmt.Sprintf("pid %d", p.PID)
		default:
			return fmt.Sprintf("pid %d DEAD (log %s)", p.PID, p.Log)
		}
	}
	members := l.EtcdMembers()
	if len(members) == 1 {
		fmt.Fprintf(w, "etcd %s (mutual TLS, certificates in %s/pki): %s\n\n", members[0].Endpoint, l.Dir(), procState(members[0].Name))
	} else {
		leader, _ := l.EtcdLeader(ctx)
		fmt.Fprintf(w, "etcd: %d members (mutual TLS for clients and peers, certificates in %s/pki)\n", len(members), l.Dir())
		for _, m := range members {
			role := ""
			if m.Name == leader {
				role = ", leader"
			}
			fmt.Fprintf(w, "  %s %s: %s%s\n", m.Name, m.Endpoint, procState(m.Name), role)
		}
		fmt.Fprintln(w)
	}

	if o.Kubernetes {
		fmt.Fprintf(w, "kubernetes %s (CA %s/pki/ca.crt, kubeconfigs in %s/kube): kube-apiserver %s", lab.KubeAPIServerURL, l.Dir(), l.Dir(), procState(lab.KubeAPIServerBinary))
		for i := 1; i <= o.KubeControllers; i++ {
			fmt.Fprintf(w, ", %s %s", lab.KubeControllersName(i), procState(lab.KubeControllersName(i)))
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tAGENT\tREADY\tBGP PEERS")
	for _, h := range l.Hosts() {
		role := ""
		if h.Reflector {
			role = " (reflector)"
		}
		ready, peers := "-", "-"
		if !o.SkipAgents {
			st, err := l.NodeStatus(ctx, h.Name)
			if err != nil {
				ready = "unreachable"
			} else {
				ready = map[bool]string{true: "yes", false: "no"}[st.GetReady()]
				var ps []string
				for _, p := range st.GetBgpPeers() {
					ps = append(ps, fmt.Sprintf("%s %s %s", p.GetAddress(), shortEnum(p.GetType().String(), "BGP_PEER_TYPE_"), shortEnum(p.GetState().String(), "BGP_SESSION_STATE_")))
				}
				if len(ps) > 0 {
					peers = strings.Join(ps, ", ")
				} else {
					peers = "none"
				}
			}
		}
		addr := h.IP
		if h.IPv6 != "" {
			addr += "," + h.IPv6
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\n", h.Name, role, addr, procState("agent-"+h.Name), ready, peers)
	}
	tw.Flush()

	if o.Peer == lab.PeerBird {
		torAddr := lab.TorIP
		if o.IPv6 {
			torAddr += "," + lab.TorIPv6
		}
		fmt.Fprintf(w, "\ntor %s (BIRD, AS %d): %s", torAddr, lab.TorAS, procState("bird"))
		if up, err := l.BirdEstablished(ctx); err == nil {
			var names []string
			for n := range up {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(w, ", %s %s", n, map[bool]string{true: "Established", false: "down"}[up[n]])
			}
		} else {
			fmt.Fprintf(w, ", birdc: %v", err)
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w)
	ws := l.Workloads()
	if len(ws) == 0 {
		fmt.Fprintln(w, "no workloads (calyx-lab add NAME --host host1)")
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tHOST\tIP\tLABELS")
	for _, wl := range ws {
		ip := strings.Join(wl.IPs, ",")
		if !wl.Wired {
			ip = "(not wired)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", wl.Name, wl.Host, ip, formatLabels(wl.Labels))
	}
	tw.Flush()
}

func shortEnum(s, prefix string) string {
	s = strings.TrimPrefix(s, prefix)
	if s == "" {
		return "?"
	}
	return strings.ToUpper(s[:1]) + strings.ToLower(s[1:])
}

func formatLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// parseLabels reads "k=v,k2=v2".
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func cmdAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("add", &g, stderr)
	host := fs.String("host", "", "host to put the workload on (host1..hostN)")
	labels := fs.String("labels", "", "labels, k=v,k2=v2 (passed as the CNI labels capability)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *host == "" {
		return errors.New("usage: calyx-lab add NAME --host H [--labels k=v,...]")
	}
	ls, err := parseLabels(*labels)
	if err != nil {
		return err
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	w, err := l.AddWorkload(ctx, fs.Arg(0), *host, ls)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s on %s: %s\n", w.Name, w.Host, strings.Join(w.IPs, ", "))
	return nil
}

func cmdDel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("del", &g, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: calyx-lab del NAME")
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	if err := l.DelWorkload(ctx, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s deleted\n", fs.Arg(0))
	return nil
}

func cmdExec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("exec", &g, stderr)
	// Everything after TARGET belongs to the command, flags included.
	fs.SetInterspersed(false)
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 1 && rest[1] == "--" {
		rest = append(rest[:1], rest[2:]...)
	}
	if len(rest) < 2 {
		return errors.New("usage: calyx-lab exec TARGET -- CMD [ARGS...]")
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	// The command runs until it ends: a Ctrl-C goes to it (same process
	// group), not to a context that would kill it from here.
	cmd, err := l.Command(context.Background(), rest[0], rest[1:]...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitCode(ee.ExitCode())
	}
	return err
}

func cmdPing(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("ping", &g, stderr)
	all := fs.Bool("all", false, "include the hosts as sources and targets")
	parallel := fs.Int("parallel", 8, "pings at a time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	eps, eps6 := l.Endpoints(*all), l.Endpoints6(*all)
	if len(eps) < 2 && len(eps6) < 2 {
		return errors.New("fewer than two endpoints to ping (add workloads, or use --all)")
	}
	failed, printed := false, false
	// A dual-stack lab gets one matrix per family, each titled.
	for _, fam := range []struct {
		title string
		eps   []lab.Endpoint
	}{{"IPv4", eps}, {"IPv6", eps6}} {
		if len(fam.eps) < 2 {
			continue
		}
		if printed {
			fmt.Fprintln(stdout)
		}
		if len(eps6) >= 2 {
			fmt.Fprintf(stdout, "%s\n", fam.title)
		}
		m := l.PingMatrix(ctx, fam.eps, fam.eps, *parallel)
		fmt.Fprint(stdout, m.String())
		printed = true
		failed = failed || len(m.Failed()) > 0
	}
	if failed {
		return exitCode(1)
	}
	return nil
}

func cmdDown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("down", &g, stderr)
	purge := fs.Bool("purge", false, "remove the whole lab directory, logs included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireRoot(); err != nil {
		return err
	}
	if err := lab.DownDir(g.dir, *purge, g.logger(stderr)); err != nil {
		return err
	}
	if *purge {
		fmt.Fprintf(stdout, "lab %s is down; directory removed\n", g.dir)
	} else {
		fmt.Fprintf(stdout, "lab %s is down; logs kept in %s/logs\n", g.dir, g.dir)
	}
	return nil
}
