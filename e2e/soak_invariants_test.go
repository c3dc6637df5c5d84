package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/e2e/lab"
)

// soakPolicyName is the policy the soak toggles. It selects the churned
// workloads (and the sentinel) labelled soak-app=b and lets in only those
// labelled soak-app=a, so the agents keep an ipset of every "a" address.
const soakPolicyName = "soak-b-from-a"

const soakPolicyYAML = `apiVersion: calyx.dev/v1
kind: Policy
metadata:
  name: ` + soakPolicyName + `
spec:
  selector: soak-app == "b"
  types: [Ingress]
  ingress:
  - action: Allow
    source:
      selector: soak-app == "a"
`

// soakOpenSet holds an (address, interface) entry for every local
// endpoint that no policy selects (the policy package's cx-open-wl).
const soakOpenSet = "cx-open-wl"

// soakSelected says whether the soak's policy selects w.
func soakSelected(w soakWL) bool { return w.Labels["soak-app"] == "b" }

// soakCheckOutcome is what one check found.
type soakCheckOutcome struct {
	Problems   []string // empty: every invariant holds
	Leaked     []string // IPAM allocations without endpoint, young enough for the GC to come
	Counts     map[string]soakCounts
	Cluster    soakClusterCounts
	Took       time.Duration
	At         time.Time
	BlockOwner map[netip.Prefix]string
}

type soakClusterCounts struct {
	WEPs, Handles, Blocks, Used int
}

var soakAgeRE = regexp.MustCompile(`allocated (\S+) ago`)

// check compares everything the agents, etcd and the IPAM hold with the
// live workloads. policyOn says whether the soak's policy is applied.
// Leaked allocations younger than tolerate (the GC's grace plus its
// interval) are listed apart: the GC is due to release them.
func (s *soak) check(ctx context.Context, policyOn bool, tolerate time.Duration) soakCheckOutcome {
	out := soakCheckOutcome{Counts: map[string]soakCounts{}, At: time.Now()}
	bad := func(format string, args ...any) { out.Problems = append(out.Problems, fmt.Sprintf(format, args...)) }
	live := s.fleet.snapshot()
	ds, err := s.l.Datastore()
	if err != nil {
		bad("datastore: %v", err)
		return out
	}

	// WorkloadEndpoints in etcd: exactly one per live workload.
	res, _, err := ds.List(ctx, datastore.KindWorkloadEndpoint)
	if err != nil {
		bad("listing WorkloadEndpoints: %v", err)
		return out
	}
	out.Cluster.WEPs = len(res)
	wepOf := map[string]*datastore.WorkloadEndpoint{} // container ID -> endpoint
	for _, r := range res {
		w := r.(*datastore.WorkloadEndpoint)
		wepOf[w.Spec.ContainerID] = w
	}
	ifaceOf := map[string]string{} // workload name -> host interface
	liveIDs := map[string]bool{}
	for _, w := range live {
		liveIDs[w.ContainerID] = true
		e := wepOf[w.ContainerID]
		switch {
		case e == nil:
			bad("etcd: no WorkloadEndpoint for live workload %s on %s (%s)", w.Name, w.Host, w.IP)
			continue
		case e.Spec.Node != w.Host:
			bad("etcd: WorkloadEndpoint %s of %s says node %s, the workload is on %s", e.Metadata.Name, w.Name, e.Spec.Node, w.Host)
		case !soakHasNet(e.Spec.IPNetworks, w.IP):
			bad("etcd: WorkloadEndpoint %s of %s has %v, the workload has %s", e.Metadata.Name, w.Name, e.Spec.IPNetworks, w.IP)
		}
		ifaceOf[w.Name] = e.Spec.InterfaceName
	}
	for id, e := range wepOf {
		if !liveIDs[id] {
			bad("etcd: leaked WorkloadEndpoint %s (node %s, %v, container %.12s) of no live workload", e.Metadata.Name, e.Spec.Node, e.Spec.IPNetworks, id)
		}
	}

	// IPAM: calyxctl ipam check, and addresses in use == live workloads.
	usage, err := ipam.New(ds, slog.New(slog.DiscardHandler)).Show(ctx)
	if err != nil {
		bad("ipam show: %v", err)
		return out
	}
	blockOwner := map[netip.Prefix]string{}
	for _, b := range usage.Blocks {
		blockOwner[b.CIDR] = b.Node
	}
	for _, p := range usage.Pools {
		out.Cluster.Used += p.Used
	}
	out.Cluster.Blocks = len(usage.Blocks)
	out.BlockOwner = blockOwner
	if n, err := soakCountKeys(ctx, ds, "/calyx/v1/ipam/handles/"); err == nil {
		out.Cluster.Handles = n
	} else {
		bad("counting IPAM handles: %v", err)
	}
	leakedAddrs := 0
	problems, err := s.ipamCheck(ctx)
	if err != nil {
		bad("calyxctl ipam check: %v", err)
	}
	for _, p := range problems {
		if p.Kind == ipam.ProblemLeakedAllocation {
			if m := soakAgeRE.FindStringSubmatch(p.Detail); m != nil {
				if age, err := time.ParseDuration(m[1]); err == nil && age < tolerate {
					out.Leaked = append(out.Leaked, fmt.Sprintf("%s %v on %s (%s)", p.Subject, p.Addresses, p.Node, p.Detail))
					leakedAddrs += len(p.Addresses)
					continue
				}
			}
		}
		bad("ipam check: %s %s node %s %v: %s", p.Kind, p.Subject, p.Node, p.Addresses, p.Detail)
	}
	if want := len(live) + leakedAddrs; out.Cluster.Used != want {
		bad("ipam: %d addresses in use, want %d (%d live workloads + %d leaked within the grace period)", out.Cluster.Used, want, len(live), leakedAddrs)
	}
	if out.Cluster.Handles != out.Cluster.Used {
		bad("ipam: %d handles for %d addresses in use", out.Cluster.Handles, out.Cluster.Used)
	}

	// Each host's kernel.
	views := map[string]*soakHostView{}
	for _, h := range s.l.Hosts() {
		v, err := s.nl.readHost(ctx, s.l, h.Name)
		if err != nil {
			bad("%s: %v", h.Name, err)
			continue
		}
		views[h.Name] = v
		out.Counts[h.Name] = v.counts()
	}
	aIPs := map[string]bool{}
	for _, w := range live {
		if w.Labels["soak-app"] == "a" {
			aIPs[w.IP] = true
		}
	}
	for _, h := range s.l.Hosts() {
		v := views[h.Name]
		if v == nil {
			continue
		}
		s.checkHost(h, v, live, ifaceOf, blockOwner, aIPs, policyOn, bad)
		s.checkAgentMetrics(ctx, h.Name, live, bad)
	}
	out.Took = time.Since(out.At)
	return out
}

// checkHost compares one host's kernel with the live workloads.
func (s *soak) checkHost(h lab.Host, v *soakHostView, live []soakWL, ifaceOf map[string]string,
	blockOwner map[netip.Prefix]string, aIPs map[string]bool, policyOn bool, bad func(string, ...any)) {
	fw, tw := v.chainsWithPrefix("cx-fw-"), v.chainsWithPrefix("cx-tw-")
	open := v.sets[soakOpenSet] // "address,interface" of the endpoints no policy selects
	wantLinks, wantRoutes, livePairs := map[string]bool{}, map[netip.Prefix]bool{}, map[string]bool{}
	selectedHere := false
	for _, w := range live {
		if w.Host != h.Name {
			continue
		}
		ifc := ifaceOf[w.Name]
		wantLinks[ifc] = true
		livePairs[w.IP+","+ifc] = true
		p := netip.PrefixFrom(netip.MustParseAddr(w.IP), 32)
		wantRoutes[p] = true
		if dev, ok := v.wlRoutes[p]; ok && dev != ifc {
			bad("%s: route %s goes to %s, the endpoint's interface is %s", h.Name, p, dev, ifc)
		}
		// An endpoint's policy is in force either through its own chains
		// (cx-fw-<if>, cx-tw-<if>) or, when no policy selects it, through
		// its (address, interface) entry in the open set.
		chains, inOpen := fw["cx-fw-"+ifc] && tw["cx-tw-"+ifc], open[w.IP+","+ifc]
		jumps := v.policyJump["cx-tw-"+ifc]
		switch selected := policyOn && soakSelected(w); {
		case selected && (!chains || !jumps || inOpen):
			bad("%s: %s (%s, soak-app=b) is selected by the policy but has chains %v, a jump to the policy %v, an open-set entry %v", h.Name, w.Name, ifc, chains, jumps, inOpen)
		case !selected && (jumps || chains == inOpen):
			bad("%s: %s (%s, soak-app=%s) is selected by no policy but has chains %v, a jump to a policy %v, an open-set entry %v", h.Name, w.Name, ifc, w.Labels["soak-app"], chains, jumps, inOpen)
		}
		selectedHere = selectedHere || soakSelected(w)
	}
	// Nothing may be left of an endpoint that is gone: no chain, no open
	// entry (a stale one would let a reused address through as open).
	var stale []string
	for c := range fw {
		if !wantLinks[strings.TrimPrefix(c, "cx-fw-")] {
			stale = append(stale, c)
		}
	}
	for c := range tw {
		if !wantLinks[strings.TrimPrefix(c, "cx-tw-")] {
			stale = append(stale, c)
		}
	}
	for m := range open {
		if !livePairs[m] {
			stale = append(stale, soakOpenSet+" "+m)
		}
	}
	if len(stale) > 0 {
		bad("%s: policy state of endpoints that are gone: %s", h.Name, soakList(stale))
	}
	gotRoutes := map[netip.Prefix]bool{}
	for p := range v.wlRoutes {
		gotRoutes[p] = true
	}
	wantBlackholes, wantLearned := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for b, owner := range blockOwner {
		if owner == h.Name {
			wantBlackholes[b] = true
		} else if owner != "" {
			wantLearned[b] = true
		}
	}
	gotLearned := map[netip.Prefix]bool{}
	pool := netip.MustParsePrefix(s.l.Options().Pool)
	for p := range v.learned {
		if pool.Overlaps(p) {
			gotLearned[p] = true
		}
	}
	for _, d := range []string{
		soakSetDiff(h.Name+": cx interfaces", v.links, wantLinks),
		soakSetDiff(h.Name+": proto 201 workload routes", gotRoutes, wantRoutes),
		soakSetDiff(h.Name+": proto 201 blackholes (own blocks)", v.blackholes, wantBlackholes),
		soakSetDiff(h.Name+": proto 202 routes into the pool (other hosts' blocks)", gotLearned, wantLearned),
	} {
		if d != "" {
			bad("%s", d)
		}
	}

	// The policy: its rule chain exists only where and while it selects a
	// local workload. Its source set may exist on every host while the
	// policy exists (the agent keeps a rule's selector set for as long as
	// the policy is there, selected here or not), must go with the policy,
	// and must hold every "a" address and nothing else (a stale member
	// would let a reused address in).
	pi := v.chainsWithPrefix("cx-pi-")
	var srcSets []string
	for name := range v.sets {
		if strings.HasPrefix(name, "cx-s-") {
			srcSets = append(srcSets, name)
		}
	}
	switch {
	case !policyOn:
		if len(pi) > 0 || len(srcSets) > 0 {
			bad("%s: the policy is deleted but its chains %v and selector ipsets %v remain", h.Name, soakKeys(pi), srcSets)
		}
		return
	case selectedHere && len(pi) != 1:
		bad("%s: %d cx-pi chains, want 1 for policy %s (it selects a workload here)", h.Name, len(pi), soakPolicyName)
	case !selectedHere && len(pi) > 0:
		bad("%s: policy chains %v remain though the policy selects nothing here", h.Name, soakKeys(pi))
	}
	switch {
	case len(srcSets) > 1:
		bad("%s: %d cx-s ipsets %v, want at most 1 (soak-app == \"a\")", h.Name, len(srcSets), srcSets)
	case len(srcSets) == 0 && selectedHere:
		bad("%s: no cx-s ipset for the policy's source selector, though it selects a workload here", h.Name)
	case len(srcSets) == 1:
		if d := soakSetDiff(h.Name+": members of "+srcSets[0]+" (soak-app == \"a\")", v.sets[srcSets[0]], aIPs); d != "" {
			bad("%s", d)
		}
	}
}

// checkAgentMetrics: the agent's own view agrees (local endpoints), and it
// says it is in sync and its policy is programmed.
func (s *soak) checkAgentMetrics(ctx context.Context, host string, live []soakWL, bad func(string, ...any)) {
	m, err := soakScrapeMetrics(ctx, s.l, host, "127.0.0.1:9091")
	if err != nil {
		bad("%s: %v", host, err)
		return
	}
	want := 0
	for _, w := range live {
		if w.Host == host {
			want++
		}
	}
	if got := m.value("calyx_local_endpoints"); got != float64(want) {
		bad("%s: the agent's calyx_local_endpoints is %.0f, %d workloads live there", host, got, want)
	}
	for _, g := range []string{"calyx_datastore_in_sync", "calyx_policy_ready"} {
		if v := m.value(g); v != 1 {
			bad("%s: the agent's %s is %.0f", host, g, v)
		}
	}
}

func soakHasNet(nets []string, ip string) bool {
	for _, n := range nets {
		if n == ip+"/32" {
			return true
		}
	}
	return false
}

func soakKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func soakCountKeys(ctx context.Context, ds *datastore.Client, prefix string) (int, error) {
	r, err := ds.Etcd().Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return int(r.Count), nil
}

// ipamCheck runs `calyxctl ipam check -o json` on host1, as an operator would.
func (s *soak) ipamCheck(ctx context.Context) ([]ipam.Problem, error) {
	out, err := s.l.ExecContext(ctx, "host1", lab.CalyxctlBinary, "ipam", "check", "-o", "json")
	if err != nil {
		return nil, err
	}
	var ps []ipam.Problem
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		return nil, fmt.Errorf("decoding %q: %w", out, err)
	}
	return ps, nil
}

// converge checks until every invariant holds or s.cfg.Converge passes:
// the agents program policy and routes asynchronously.
func (s *soak) converge(ctx context.Context, policyOn bool, tolerate time.Duration) (soakCheckOutcome, time.Duration) {
	start := time.Now()
	for {
		o := s.check(ctx, policyOn, tolerate)
		if len(o.Problems) == 0 || time.Since(start) > s.cfg.Converge || ctx.Err() != nil {
			return o, time.Since(start)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
