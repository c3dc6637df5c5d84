package policy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/calyx-net/calyx/datastore"
)

// fakeKernel records the commands a Dataplane runs and keeps just enough
// state (the text it was given) to answer the save commands: it plays back
// what iptables-restore wrote as iptables-save output.
type fakeKernel struct {
	mu     sync.Mutex
	calls  []string // argv[0] and the stdin's first line
	stdins []string
	fail   func(argv []string) error
	save   map[string]string // argv joined -> output
}

func (k *fakeKernel) Run(_ context.Context, stdin []byte, argv ...string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, strings.Join(argv, " "))
	k.stdins = append(k.stdins, string(stdin))
	if k.fail != nil {
		if err := k.fail(argv); err != nil {
			return nil, err
		}
	}
	return []byte(k.save[strings.Join(argv, " ")]), nil
}

func (k *fakeKernel) reset() (calls, stdins []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	calls, stdins = k.calls, k.stdins
	k.calls, k.stdins = nil, nil
	return calls, stdins
}

func testEndpoint(name, ifname, ip string, labels map[string]string) *datastore.WorkloadEndpoint {
	return &datastore.WorkloadEndpoint{
		Metadata: datastore.Metadata{Name: name, Labels: labels},
		Spec:     datastore.WorkloadEndpointSpec{Node: "node-a", InterfaceName: ifname, IPNetworks: []string{ip}},
	}
}

func newFakeDataplane(t *testing.T) (*Dataplane, *fakeKernel) {
	t.Helper()
	k := &fakeKernel{}
	d, err := NewWithRunner(Config{NodeName: "node-a"}, nil, k)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*datastore.WorkloadEndpoint{
		testEndpoint("web", "cxweb", "10.244.0.2/32", map[string]string{"app": "web"}),
		testEndpoint("db", "cxdb", "10.244.0.3/32", map[string]string{"app": "db"}),
		testEndpoint("other", "cxother", "10.244.0.4/32", map[string]string{"app": "other"}),
	} {
		if err := d.SetEndpoint(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetPolicy(dbIngress()); err != nil {
		t.Fatal(err)
	}
	return d, k
}

func TestApplyOrderAndIncrementalWrites(t *testing.T) {
	d, k := newFakeDataplane(t)
	ctx := context.Background()
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins := k.reset()
	// Read the kernel first, then sets, then each table.
	want := []string{"iptables-save", "ipset save", "ipset -exist restore", "iptables-restore --noflush -w 5"}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("first apply ran:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	if !strings.HasPrefix(stdins[3], "*raw") || !strings.Contains(stdins[3], "COMMIT\n*nat\n") ||
		!strings.Contains(stdins[3], "COMMIT\n*filter\n") {
		t.Errorf("tables not written one section each:\n%s", stdins[3])
	}
	if err := d.Ready(); err != nil {
		t.Errorf("not ready after a good apply: %v", err)
	}

	// Nothing changed: nothing runs.
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if calls, _ := k.reset(); len(calls) != 0 {
		t.Errorf("idle apply ran %v", calls)
	}

	// A label change only touches set members.
	if err := d.SetEndpoint(testEndpoint("other", "cxother", "10.244.0.4/32", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins = k.reset()
	if len(calls) != 1 || calls[0] != "ipset -exist restore" || !strings.Contains(stdins[0], "add cx-s-") ||
		!strings.Contains(stdins[0], " 10.244.0.4\n") {
		t.Errorf("label change ran %v with %q", calls, stdins)
	}

	// A change of rules only rewrites that policy's chain.
	p := dbIngress()
	p.Spec.Ingress[0].Destination.Ports[0].MinPort = 5433
	p.Spec.Ingress[0].Destination.Ports[0].MaxPort = 5433
	if err := d.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins = k.reset()
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "iptables-restore") {
		t.Fatalf("rule change ran %v", calls)
	}
	if n := strings.Count(stdins[0], "\n:"); n != 1 || !strings.Contains(stdins[0], ":"+policyChainName("db-ingress", ingress)) ||
		strings.Contains(stdins[0], "*raw") {
		t.Errorf("rule change wrote more than the policy chain:\n%s", stdins[0])
	}

	// Deleting the last policy that selects db makes it open: it joins
	// the open set first (ipset before iptables), then the dispatch chains
	// forget it and its chains and the policy chain are deleted after that
	// rewrite; the selector set is destroyed after iptables.
	d.DeletePolicy("db-ingress")
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins = k.reset()
	if len(calls) != 3 || calls[0] != "ipset -exist restore" || !strings.HasPrefix(calls[1], "iptables-restore") ||
		calls[2] != "ipset -exist restore" || stdins[0] != "add cx-open-wl 10.244.0.3,cxdb\n" ||
		!strings.HasPrefix(stdins[2], "destroy cx-s-") {
		t.Fatalf("policy delete ran %v %q", calls, stdins)
	}
	text := stdins[1]
	for _, del := range []string{"-X cx-pi-", "-X cx-tw-cxdb", "-X cx-fw-cxdb"} {
		if !strings.Contains(text, del) || strings.Index(text, "-A cx-to-wl-dispatch") > strings.Index(text, del) {
			t.Errorf("%s missing or before the dispatch chain that referenced it was rewritten:\n%s", del, text)
		}
	}
	if strings.Contains(text, "-A cx-tw-cxdb") || strings.Contains(text, "-g cx-tw-cxdb") {
		t.Errorf("open endpoint still has chains or a dispatch entry:\n%s", text)
	}
}

func TestFailuresReportNotReadyAndRetryFromKernel(t *testing.T) {
	d, k := newFakeDataplane(t)
	ctx := context.Background()
	if err := d.Ready(); err == nil {
		t.Error("ready before the first write")
	}
	k.fail = func(argv []string) error {
		if strings.HasPrefix(argv[0], "iptables-restore") {
			return errors.New("boom")
		}
		return nil
	}
	for i := range 3 {
		if err := d.Apply(ctx); err == nil {
			t.Fatalf("apply %d: want an error", i)
		}
	}
	err := d.Ready()
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Ready after 3 failures = %v, want the write error", err)
	}
	calls, _ := k.reset()
	// Each failed attempt re-read the kernel before writing again.
	if n := strings.Count(strings.Join(calls, "\n"), "ipset save"); n != 3 {
		t.Errorf("kernel read %d times over 3 failed applies, want 3", n)
	}
	k.fail = nil
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Ready(); err != nil {
		t.Errorf("still not ready after a good write: %v", err)
	}
}

// TestResyncRewritesOnlyDrift feeds back what was written as the kernel's
// state, with one chain emptied, and checks only that chain is rewritten.
func TestResyncRewritesOnlyDrift(t *testing.T) {
	d, k := newFakeDataplane(t)
	ctx := context.Background()
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	_, stdins := k.reset()
	// What iptables-save would print after `iptables -F cx-tw-cxdb`:
	// the batch as written, hooks appended, minus that chain's rules.
	var save []string
	for _, l := range strings.Split(stdins[3], "\n") {
		switch {
		case strings.HasPrefix(l, "-A cx-tw-cxdb "):
		case strings.HasPrefix(l, "-I "):
			parts := strings.SplitN(l, " ", 4) // -I CHAIN 1 spec
			save = append(save, "-A "+parts[1]+" "+parts[3])
		default:
			save = append(save, l)
		}
	}
	k.save = map[string]string{"iptables-save": strings.Join(save, "\n"), "ipset save": stdins[2]}
	if err := d.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	k.reset()
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins := k.reset()
	if len(calls) != 1 {
		t.Fatalf("repair ran %v", calls)
	}
	if got := strings.Count(stdins[0], "\n:"); got != 1 || !strings.Contains(stdins[0], ":cx-tw-cxdb ") {
		t.Errorf("repair wrote:\n%s", stdins[0])
	}
	if strings.Contains(stdins[0], "-I ") {
		t.Errorf("repair re-inserted hooks that were there:\n%s", stdins[0])
	}
}

func TestRefusesWhatItCannotRender(t *testing.T) {
	d, _ := newFakeDataplane(t)
	tcp, _ := datastore.ParseProtocol("tcp")
	icmp, _ := datastore.ParseProtocol("icmp")
	cases := map[string]*datastore.Policy{
		"bad selector": {Metadata: datastore.Metadata{Name: "x"}, Spec: datastore.PolicySpec{Selector: `app ==`}},
		"ports without protocol": {Metadata: datastore.Metadata{Name: "x"}, Spec: datastore.PolicySpec{
			Ingress: []datastore.Rule{{Action: datastore.ActionAllow, Destination: datastore.EntityRule{Ports: []datastore.Port{{MinPort: 1, MaxPort: 1}}}}}}},
		"icmp on tcp": {Metadata: datastore.Metadata{Name: "x"}, Spec: datastore.PolicySpec{
			Ingress: []datastore.Rule{{Action: datastore.ActionAllow, Protocol: &tcp, ICMP: &datastore.ICMPMatch{}}}}},
		"bad net": {Metadata: datastore.Metadata{Name: "x"}, Spec: datastore.PolicySpec{
			Ingress: []datastore.Rule{{Action: datastore.ActionAllow, Protocol: &icmp, Source: datastore.EntityRule{Nets: []string{"10.0.0.0/33"}}}}}},
		"unknown action": {Metadata: datastore.Metadata{Name: "x"}, Spec: datastore.PolicySpec{
			Ingress: []datastore.Rule{{Action: "Maybe"}}}},
	}
	for name, p := range cases {
		if err := d.SetPolicy(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := d.SetEndpoint(testEndpoint("eth", "eth1", "10.244.0.9/32", nil)); err == nil {
		t.Error("accepted a local endpoint whose interface the fail-closed rules do not cover")
	}
	if err := d.SetEndpoint(testEndpoint("dup", "cxweb", "10.244.0.9/32", nil)); err == nil {
		t.Error("accepted a second endpoint on the same interface")
	}
	if err := d.SetEndpoint(testEndpoint("net", "cxnet", "10.244.0.0/24", nil)); err == nil {
		t.Error("accepted an endpoint address that is not a single IP")
	}
}

// TestOnlyPoliciesInUseGetChains: a policy that selects no local endpoint
// costs no chain; its chains come and go with the local endpoints it
// selects.
func TestOnlyPoliciesInUseGetChains(t *testing.T) {
	c, _ := Config{NodeName: "node-a"}.withDefaults()
	m := newModel(&c)
	p := dbIngress()
	p.Spec.Selector = `app == "cache"`
	if err := m.setPolicy(p); err != nil {
		t.Fatal(err)
	}
	remote := testEndpoint("cache-b", "cxcacheb", "10.244.1.2/32", map[string]string{"app": "cache"})
	remote.Spec.Node = "node-b"
	if err := m.setEndpoint(remote); err != nil {
		t.Fatal(err)
	}
	m.refresh()
	chain := policyChainName("db-ingress", ingress)
	if _, ok := m.want.chains[V4][TableFilter][chain]; ok {
		t.Fatal("chain rendered for a policy that selects no local endpoint")
	}
	local := testEndpoint("cache-a", "cxcachea", "10.244.0.2/32", map[string]string{"app": "cache"})
	if err := m.setEndpoint(local); err != nil {
		t.Fatal(err)
	}
	m.refresh()
	if _, ok := m.want.chains[V4][TableFilter][chain]; !ok {
		t.Fatal("no chain once a local endpoint is selected")
	}
	local.Metadata.Labels = map[string]string{"app": "web"}
	if err := m.setEndpoint(local); err != nil {
		t.Fatal(err)
	}
	m.refresh()
	if _, ok := m.want.chains[V4][TableFilter][chain]; ok {
		t.Fatal("chain kept after the last local endpoint left the selector")
	}
}
