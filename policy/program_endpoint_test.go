package policy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// recordingMembers stands in for netlink: it records the member changes
// it was given and fails when told to.
type recordingMembers struct {
	mu   sync.Mutex
	ops  []string // "add|del <set> <member>"
	fail error
}

func (r *recordingMembers) writeMembers(_ context.Context, ops []setOp) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	for _, op := range ops {
		for _, m := range op.adds {
			r.ops = append(r.ops, "add "+op.set.Name+" "+memberString(m))
		}
		for _, m := range op.dels {
			r.ops = append(r.ops, "del "+op.set.Name+" "+memberString(m))
		}
	}
	return nil
}

func (r *recordingMembers) reset() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.ops
	r.ops = nil
	return out
}

func newProgramTest(t *testing.T) (*Dataplane, *fakeKernel, *recordingMembers) {
	t.Helper()
	d, k := newFakeDataplane(t)
	nl := &recordingMembers{}
	d.members = nl
	return d, k, nl
}

// TestProgramEndpointOpenRunsNoProcess: once the first Apply has created
// the sets, a new endpoint no policy selects is set members only, written
// by the member writer (netlink) with no command run; the next Apply finds
// nothing left to do.
func TestProgramEndpointOpenRunsNoProcess(t *testing.T) {
	d, k, nl := newProgramTest(t)
	ctx := context.Background()
	// The first write creates sets and chains: that needs the commands,
	// even through ProgramEndpoint.
	if err := d.ProgramEndpoint(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if calls, _ := k.reset(); len(calls) != 4 {
		t.Errorf("first ProgramEndpoint ran %v, want the kernel read and the full write", calls)
	}
	if ops := nl.reset(); len(ops) != 0 {
		t.Errorf("sets that do not exist yet were written over netlink: %v", ops)
	}

	// "web" is in the source selector of db-ingress: its new address goes
	// there too, in the same write.
	if err := d.SetEndpoint(testEndpoint("web-2", "cxweb2", "10.244.0.9/32", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	before := d.Stats()
	if err := d.ProgramEndpoint(ctx, "web-2"); err != nil {
		t.Fatal(err)
	}
	if calls, _ := k.reset(); len(calls) != 0 {
		t.Errorf("ProgramEndpoint of an open endpoint ran %v", calls)
	}
	got := strings.Join(nl.reset(), "\n")
	for _, want := range []string{"add cx-open-wl 10.244.0.9/32,cxweb2", "add cx-s-", " 10.244.0.9/32"} {
		if !strings.Contains(got, want) {
			t.Errorf("netlink writes lack %q:\n%s", want, got)
		}
	}
	if s := d.Stats(); s.NetlinkWrites != before.NetlinkWrites+1 || s.ChainsWritten != before.ChainsWritten {
		t.Errorf("stats after the fast path: %+v (before %+v)", s, before)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if calls, _ := k.reset(); len(calls) != 0 || len(nl.reset()) != 0 {
		t.Errorf("the Apply after ProgramEndpoint rewrote what was already there: %v", calls)
	}

	// DeleteEndpoint takes its entries out, again without a process.
	d.DeleteEndpoint("web-2")
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if calls, _ := k.reset(); len(calls) != 0 {
		t.Errorf("deleting an open endpoint ran %v", calls)
	}
	if got := strings.Join(nl.reset(), "\n"); !strings.Contains(got, "del cx-open-wl 10.244.0.9/32,cxweb2") {
		t.Errorf("open set entry not deleted:\n%s", got)
	}
}

// TestProgramEndpointSelectedWritesChains: an endpoint a policy selects
// gets its chains through iptables-restore, and leaves (or never joins)
// the open set in the ipset write before it.
func TestProgramEndpointSelectedWritesChains(t *testing.T) {
	d, k, nl := newProgramTest(t)
	ctx := context.Background()
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	k.reset()
	if err := d.SetEndpoint(testEndpoint("db-2", "cxdb2", "10.244.0.10/32", map[string]string{"app": "db"})); err != nil {
		t.Fatal(err)
	}
	if err := d.ProgramEndpoint(ctx, "db-2"); err != nil {
		t.Fatal(err)
	}
	calls, stdins := k.reset()
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "iptables-restore") ||
		!strings.Contains(stdins[0], "-g cx-tw-cxdb2") || !strings.Contains(stdins[0], ":cx-tw-cxdb2 ") {
		t.Fatalf("ProgramEndpoint of a selected endpoint ran %v:\n%s", calls, strings.Join(stdins, "\n"))
	}
	if got := strings.Join(nl.reset(), "\n"); strings.Contains(got, "cx-open") {
		t.Errorf("a selected endpoint joined the open set: %s", got)
	}

	// A policy that starts selecting "other" takes it out of the open set
	// in the set write that comes before its chains.
	p := dbIngress()
	p.Metadata.Name = "other-ingress"
	p.Spec.Selector = `app == "other"`
	if err := d.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	calls, stdins = k.reset()
	ops := strings.Join(nl.reset(), "\n")
	if !strings.Contains(ops, "del cx-open-wl 10.244.0.4/32,cxother") || len(calls) != 1 ||
		!strings.Contains(stdins[0], "-g cx-tw-cxother") {
		t.Errorf("other's transition to selected: netlink %q, commands %v %q", ops, calls, stdins)
	}
}

// TestProgramEndpointFallsBack: when netlink fails, the same change goes
// through ipset restore; an unknown endpoint is an error after applying.
func TestProgramEndpointFallsBack(t *testing.T) {
	d, k, nl := newProgramTest(t)
	ctx := context.Background()
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	k.reset()
	nl.fail = errors.New("no netlink here")
	if err := d.SetEndpoint(testEndpoint("web-2", "cxweb2", "10.244.0.9/32", map[string]string{"app": "web"})); err != nil {
		t.Fatal(err)
	}
	if err := d.ProgramEndpoint(ctx, "web-2"); err != nil {
		t.Fatal(err)
	}
	calls, stdins := k.reset()
	if len(calls) != 1 || calls[0] != "ipset -exist restore" || !strings.Contains(stdins[0], "add cx-open-wl 10.244.0.9,cxweb2\n") {
		t.Errorf("fallback ran %v %q", calls, stdins)
	}
	if err := d.ProgramEndpoint(ctx, "nobody"); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("ProgramEndpoint of an unknown endpoint = %v, want ErrUnknownEndpoint", err)
	}
}

func TestNetlinkTarget(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
		ok   bool
	}{
		{Config{}, "", true},
		{Config{CommandPrefix: []string{"ip", "netns", "exec", "lab-h"}}, "/var/run/netns/lab-h", true},
		{Config{CommandPrefix: []string{"nsenter", "-t", "1", "-n"}}, "", false},
		{Config{CommandPrefix: []string{"nsenter", "-t", "1", "-n"}, NetNS: "/proc/1/ns/net"}, "/proc/1/ns/net", true},
	}
	for _, c := range cases {
		got, ok := netlinkTarget(&c.cfg)
		if got != c.want || ok != c.ok {
			t.Errorf("netlinkTarget(%+v) = %q, %v; want %q, %v", c.cfg, got, ok, c.want, c.ok)
		}
	}
}
