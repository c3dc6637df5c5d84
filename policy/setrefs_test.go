package policy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

// matchSetNames lists the sets one rule line matches on.
func matchSetNames(line string) []string {
	var out []string
	fields := strings.Fields(line)
	for i, f := range fields {
		if f == "--match-set" && i+1 < len(fields) {
			out = append(out, fields[i+1])
		}
	}
	return out
}

// checkSetsReferenced says what is wrong when a rendered state has a set no
// rule matches on (a set the node holds for nothing) or a rule matching on
// a set that is not there.
func checkSetsReferenced(r *Rendered) error {
	used := map[string]bool{}
	for _, f := range r.Families() {
		for _, t := range tables {
			for _, c := range r.Chains(f, t) {
				for _, l := range c.Lines {
					for _, s := range matchSetNames(l) {
						used[s] = true
					}
				}
			}
		}
	}
	var problems []string
	for _, s := range r.Sets() {
		if !used[s.Name] {
			problems = append(problems, "set "+s.Name+" is not used by any rule")
		}
		delete(used, s.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(used)) {
		problems = append(problems, "rules use set "+name+", which is not rendered")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// bIngress is the soak test's repro: a policy selecting app=="b" that
// admits TCP 5432 from the src selector, and TCP from two CIDRs (a net set).
func bIngress(src string) *datastore.Policy {
	tcp, _ := datastore.ParseProtocol("tcp")
	return &datastore.Policy{
		Metadata: datastore.Metadata{Name: "b-ingress"},
		Spec: datastore.PolicySpec{Selector: `app == "b"`, Ingress: []datastore.Rule{
			tcpRule(datastore.ActionAllow, 5432, src),
			{Action: datastore.ActionAllow, Protocol: &tcp, Source: datastore.EntityRule{Nets: []string{"10.244.9.9/32", "192.0.2.0/24"}}},
		}},
	}
}

func hasSetOf(text, kind string) bool {
	for _, prefix := range []string{"create ", "add ", "destroy "} {
		if strings.Contains(text, prefix+kind) {
			return true
		}
	}
	return false
}

// TestSetsOnlyWhileAPolicyIsActive: a policy that selects no local
// endpoint gets no set; its sets are created and filled by the ipset write
// that comes before the chains that use them when a local endpoint becomes
// selected, and destroyed after those chains are gone when the last one
// leaves.
func TestSetsOnlyWhileAPolicyIsActive(t *testing.T) {
	k := &fakeKernel{}
	d, err := NewWithRunner(Config{NodeName: "node-a"}, nil, k)
	if err != nil {
		t.Fatal(err)
	}
	nl := &recordingMembers{}
	d.members = nl
	ctx := context.Background()
	if err := d.SetPolicy(bIngress(`app == "a"`)); err != nil {
		t.Fatal(err)
	}
	a := testEndpoint("a", "cxa", "10.244.0.2/32", map[string]string{"app": "a"})
	if err := d.SetEndpoint(a); err != nil {
		t.Fatal(err)
	}
	if err := d.ProgramEndpoint(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	_, stdins := k.reset()
	all := strings.Join(stdins, "\n")
	if hasSetOf(all, "cx-s-") || hasSetOf(all, "cx-n-") || strings.Contains(all, "cx-pi-") {
		t.Fatalf("a policy selecting nothing here got sets or chains:\n%s", all)
	}
	if n := len(d.m.selSets) + len(d.m.netSets); n != 0 {
		t.Errorf("%d selectors or CIDR lists indexed for an inactive policy", n)
	}

	// b arrives: the sets come in the ipset write, before the
	// iptables-restore whose chains use them.
	b := testEndpoint("b", "cxb", "10.244.0.3/32", map[string]string{"app": "b"})
	if err := d.SetEndpoint(b); err != nil {
		t.Fatal(err)
	}
	if err := d.ProgramEndpoint(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	calls, stdins := k.reset()
	if len(calls) != 2 || calls[0] != "ipset -exist restore" || !strings.HasPrefix(calls[1], "iptables-restore") {
		t.Fatalf("b's arrival ran %v", calls)
	}
	selSet := selectorSetName(mustSel(`app == "a"`).UniqueID(), V4)
	for _, want := range []string{"create " + selSet + " hash:net", "add " + selSet + " 10.244.0.2\n", "create cx-n-"} {
		if !strings.Contains(stdins[0], want) {
			t.Errorf("set write lacks %q:\n%s", want, stdins[0])
		}
	}
	if !strings.Contains(stdins[1], "--match-set "+selSet+" src") || !strings.Contains(stdins[1], "--match-set cx-n-") {
		t.Errorf("chains do not use the new sets:\n%s", stdins[1])
	}
	if ops := nl.reset(); len(ops) != 0 {
		t.Errorf("members written over netlink to sets not created yet: %v", ops)
	}

	// While b-ingress is active, a's label change reaches its set.
	a.Metadata.Labels = map[string]string{"app": "z"}
	if err := d.SetEndpoint(a); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(nl.reset(), "\n"); got != "del "+selSet+" 10.244.0.2/32" {
		t.Errorf("label change wrote %q", got)
	}

	// b goes: chains deleted first, then the sets destroyed.
	d.DeleteEndpoint("b")
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins = k.reset()
	if len(calls) != 2 || !strings.HasPrefix(calls[0], "iptables-restore") || calls[1] != "ipset -exist restore" {
		t.Fatalf("b's departure ran %v", calls)
	}
	if !strings.Contains(stdins[0], "-X "+policyChainName("b-ingress", ingress)) {
		t.Errorf("policy chain not deleted:\n%s", stdins[0])
	}
	if !strings.Contains(stdins[1], "destroy "+selSet+"\n") || !strings.Contains(stdins[1], "destroy cx-n-") {
		t.Errorf("sets not destroyed after the chains:\n%s", stdins[1])
	}
	if n := len(d.m.selSets) + len(d.m.netSets); n != 0 {
		t.Errorf("%d selectors or CIDR lists still indexed", n)
	}
}

// TestSetsFollowPolicyVersionsAndFamilies: a rule change that keeps a
// selector keeps its set (no destroy and refill); a selector no rule uses
// any more goes; a rule that exists only in IPv4 gets no IPv6 set.
func TestSetsFollowPolicyVersionsAndFamilies(t *testing.T) {
	k := &fakeKernel{}
	d, err := NewWithRunner(Config{NodeName: "node-a", IPv6: true}, nil, k)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, w := range []*datastore.WorkloadEndpoint{
		testEndpoint("a", "cxa", "10.244.0.2/32", map[string]string{"app": "a"}),
		testEndpoint("b", "cxb", "10.244.0.3/32", map[string]string{"app": "b"}),
	} {
		if err := d.SetEndpoint(w); err != nil {
			t.Fatal(err)
		}
	}
	p := bIngress(`app == "a"`)
	p.Spec.Ingress[0].IPVersion = 4
	if err := d.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	k.reset()
	id := mustSel(`app == "a"`).UniqueID()
	if _, ok := d.m.want.sets[selectorSetName(id, V4)]; !ok {
		t.Fatal("no IPv4 set for the rule's selector")
	}
	if _, ok := d.m.want.sets[selectorSetName(id, V6)]; ok {
		t.Error("an IPv6 set for a rule that exists only in IPv4")
	}

	// Same selector, another port: only the chain is rewritten.
	p = bIngress(`app == "a"`)
	p.Spec.Ingress[0].IPVersion = 4
	p.Spec.Ingress[0].Destination.Ports[0] = datastore.Port{MinPort: 5433, MaxPort: 5433}
	if err := d.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if calls, _ := k.reset(); len(calls) != 1 || !strings.HasPrefix(calls[0], "iptables-restore") {
		t.Errorf("a port change ran %v", calls)
	}

	// Another selector in both families: the old set goes after the chain
	// stops using it, the new ones come before.
	p.Spec.Ingress[0].IPVersion = 0
	p.Spec.Ingress[0].Source.Selector = `app == "c"`
	if err := d.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins := k.reset()
	newID := mustSel(`app == "c"`).UniqueID()
	if len(calls) != 4 || calls[0] != "ipset -exist restore" || calls[3] != "ipset -exist restore" ||
		!strings.Contains(stdins[0], "create "+selectorSetName(newID, V4)+" ") ||
		!strings.Contains(stdins[0], "create "+selectorSetName(newID, V6)+" ") ||
		stdins[3] != "destroy "+selectorSetName(id, V4)+"\n" {
		t.Errorf("selector change ran %v:\n%s", calls, strings.Join(stdins, "\n---\n"))
	}
}

// TestRemoteLabelChangesCostNothingWhereNoPolicyIsActive is the cluster
// case: hundreds of policies selecting workloads of other nodes, thousands
// of endpoints elsewhere whose labels change. On this node no policy is
// active, so those changes write no set, run no process and evaluate no
// rule selector; once a local endpoint makes one policy active, changes to
// endpoints its rules select do reach its sets (the check can fail).
func TestRemoteLabelChangesCostNothingWhereNoPolicyIsActive(t *testing.T) {
	const apps, policies, remotes, changes = 40, 400, 4000, 2000
	k := &fakeKernel{}
	d, err := NewWithRunner(Config{NodeName: "node-a", IPv6: true}, nil, k)
	if err != nil {
		t.Fatal(err)
	}
	nl := &recordingMembers{}
	d.members = nl
	ctx := context.Background()
	for j := range policies {
		p := &datastore.Policy{Metadata: datastore.Metadata{Name: fmt.Sprintf("pol-%d", j)},
			Spec: datastore.PolicySpec{Selector: fmt.Sprintf(`app == "svc-%d"`, j%apps)}}
		for k := range 10 {
			p.Spec.Ingress = append(p.Spec.Ingress, tcpRule(datastore.ActionAllow, uint16(8000+k), fmt.Sprintf(`app == "svc-%d"`, (j+k+1)%apps)))
		}
		if err := d.SetPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	remote := func(i, app int) *datastore.WorkloadEndpoint {
		w := testEndpoint(fmt.Sprintf("r-%d", i), "", fmt.Sprintf("10.245.%d.%d/32", i/250, i%250+1),
			map[string]string{"app": fmt.Sprintf("svc-%d", app%apps)})
		w.Spec.Node = fmt.Sprintf("node-%d", 1+i%50)
		return w
	}
	for i := range remotes {
		if err := d.SetEndpoint(remote(i, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if err := d.SetEndpoint(testEndpoint(fmt.Sprintf("l-%d", i), fmt.Sprintf("cxl%d", i), fmt.Sprintf("10.244.0.%d/32", i+2),
			map[string]string{"app": "local"})); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	for name := range d.m.want.sets {
		if !strings.HasPrefix(name, "cx-open") && !strings.HasPrefix(name, "cx-pools") {
			t.Errorf("set %s on a node where no policy is active", name)
		}
	}
	k.reset()
	before := d.Stats()
	start := time.Now()
	for c := range changes {
		i := (c * 7919) % remotes
		if err := d.SetEndpoint(remote(i, i+1+c)); err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(ctx); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	calls, _ := k.reset()
	after := d.Stats()
	t.Logf("%d remote label changes with Apply each, no policy active here: %v (%.1f µs per change)",
		changes, took, float64(took.Microseconds())/changes)
	if len(calls) != 0 || len(nl.reset()) != 0 || after.SetsWritten != before.SetsWritten ||
		after.MembersChanged != before.MembersChanged || after.Applies != before.Applies {
		t.Errorf("remote label changes wrote to this node: %d commands %v, stats %+v (before %+v)", len(calls), calls, after, before)
	}
	if len(d.m.selSets) != 0 {
		t.Errorf("%d rule selectors indexed on a node where no policy is active", len(d.m.selSets))
	}

	// A local endpoint in svc-0 activates pol-0, pol-40, ...: their rule
	// selectors (svc-1..svc-10) get sets, and changes to them are written.
	if err := d.SetEndpoint(remote(1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := d.SetEndpoint(testEndpoint("l-0", "cxl0", "10.244.0.2/32", map[string]string{"app": "svc-0"})); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if calls, _ := k.reset(); len(calls) != 3 || calls[0] != "ipset -exist restore" {
		t.Fatalf("activating a policy ran %v, want the set write, then the IPv4 and IPv6 chains", calls)
	}
	if n := len(d.m.selSets); n != 10 {
		t.Errorf("%d selectors indexed, want the 10 that pol-0's rules use", n)
	}
	nl.reset()
	// r-1 moves from svc-1 (used) to svc-20 (not used): one member leaves.
	if err := d.SetEndpoint(remote(1, 20)); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"del " + selectorSetName(mustSel(`app == "svc-1"`).UniqueID(), V4) + " 10.245.0.2/32"}
	if got := nl.reset(); !slices.Equal(got, want) {
		t.Errorf("label change of a selected remote wrote %v, want %v", got, want)
	}
}
