package policy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/internal/netlab"
)

// kernelDiff says how the cx- chains and sets in a namespace differ from a
// rendering ("" when they agree).
func kernelDiff(ctx context.Context, t *testing.T, ns string, r *Rendered) string {
	t.Helper()
	var out []string
	for _, f := range r.Families() {
		for _, tb := range tables {
			save, err := netlab.Exec(ctx, ns, iptablesBinaries(BackendDefault, f).save, "-t", string(tb))
			if err != nil {
				t.Fatal(err)
			}
			kt := parseIptablesSave([]byte(save))[tb]
			want := r.Chains(f, tb)
			if len(kt.chains) != len(want) {
				out = append(out, fmt.Sprintf("IPv%d %s: kernel has %d cx- chains, render %d", f, tb, len(kt.chains), len(want)))
			}
			for _, c := range want {
				if !slices.Equal(kt.chains[c.Name], c.Hashes) {
					out = append(out, fmt.Sprintf("IPv%d %s: chain %s differs", f, tb, c.Name))
				}
			}
		}
	}
	save, err := netlab.Exec(ctx, ns, "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	ks, err := parseIpsetSave([]byte(save))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range r.Sets() {
		got := ks[want.Name]
		switch {
		case got == nil:
			out = append(out, "set "+want.Name+" missing")
		case got.typ != want.Type || !maps.Equal(got.members, want.Members):
			out = append(out, fmt.Sprintf("set %s is %s %v, render %s %v", want.Name, got.typ, sortedMembers(got.members), want.Type, sortedMembers(want.Members)))
		}
		delete(ks, want.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(ks)) {
		out = append(out, "set "+name+" is in the kernel, not in the render")
	}
	return strings.Join(out, "\n")
}

// TestRandomStepsInKernel is TestRandomStepsKeepSetsBeforeChains against
// the real iptables-restore and ipset in a namespace: the kernel refuses a
// rule naming a missing set and the destruction of a set a rule names, so
// every Apply (or ProgramEndpoint, whose members may go over netlink) must
// succeed, and leave exactly what a fresh Render gives.
func TestRandomStepsInKernel(t *testing.T) {
	skipUnlessLab(t)
	ctx := context.Background()
	lab := netlab.New("policy")
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	ns, err := lab.NS(ctx, "steps")
	if err != nil {
		t.Fatal(err)
	}
	w := newStepWalk(7)
	w.cfg.CommandPrefix = []string{"ip", "netns", "exec", ns}
	dp, err := New(w.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.SetPools(w.pools); err != nil {
		t.Fatal(err)
	}
	steps := 80
	if testing.Short() {
		steps = 25
	}
	var log []string
	sets := map[string]bool{} // rule sets seen in the kernel at some point
	for i := range steps {
		what, local, err := w.step(dp)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, what)
		if local != "" && w.r.IntN(2) == 0 {
			err = dp.ProgramEndpoint(ctx, local)
		} else {
			err = dp.Apply(ctx)
		}
		if err != nil {
			t.Fatalf("step %d: %v\nsteps:\n  %s", i, err, strings.Join(log, "\n  "))
		}
		r, err := w.render()
		if err != nil {
			t.Fatal(err)
		}
		if diff := kernelDiff(ctx, t, ns, r); diff != "" {
			t.Fatalf("step %d: kernel differs from a fresh render:\n%s\nsteps:\n  %s", i, diff, strings.Join(log, "\n  "))
		}
		for _, s := range r.Sets() {
			if isRuleSet(s.Name) {
				sets[s.Name] = true
			}
		}
	}
	if len(sets) < 5 {
		t.Errorf("only %d rule sets ever existed: the walk made too few policies active", len(sets))
	}
	t.Logf("%d steps, %d rule sets came and went, %d netlink writes", steps, len(sets), dp.Stats().NetlinkWrites)
}
