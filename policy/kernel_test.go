package policy

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/policy/internal/netlab"
)

// TestKernelRoundTrip programs a namespace with each iptables backend and
// checks that what iptables-save and ipset save give back is recognised
// (a resync then writes nothing), that hand-made drift is repaired exactly,
// and that other people's rules, chains and sets are left alone.
func TestKernelRoundTrip(t *testing.T) {
	skipUnlessLab(t)
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(string(backend), func(t *testing.T) {
			ctx := context.Background()
			lab := netlab.New("policy")
			t.Cleanup(func() {
				if err := lab.Close(); err != nil {
					t.Error(err)
				}
			})
			ns, err := lab.NS(ctx, "rt")
			if err != nil {
				t.Fatal(err)
			}
			bin := iptablesBinaries(backend, V4)
			ipt := strings.TrimSuffix(bin.restore, "-restore")
			sh := func(argv ...string) string {
				t.Helper()
				out, err := netlab.Exec(ctx, ns, argv...)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			// Someone else's objects.
			sh(ipt, "-A", "FORWARD", "-s", "192.0.2.1", "-j", "DROP")
			sh(ipt, "-N", "KUBE-FOO")
			sh(ipt, "-A", "KUBE-FOO", "-j", "RETURN")
			sh("ipset", "create", "kube-set", "hash:ip")

			dp, err := New(Config{NodeName: "node-a", IPv6: true, Backend: backend,
				CommandPrefix: []string{"ip", "netns", "exec", ns}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []*datastore.WorkloadEndpoint{
				testEndpoint("web", "cxweb", "10.244.0.2/32", map[string]string{"app": "web"}),
				testEndpoint("db", "cxdb", "10.244.0.3/32", map[string]string{"app": "db"}),
			} {
				w.Spec.IPNetworks = append(w.Spec.IPNetworks, "fd00::"+strings.TrimPrefix(w.Spec.IPNetworks[0], "10.244.0.")[:1]+"/128")
				if err := dp.SetEndpoint(w); err != nil {
					t.Fatal(err)
				}
			}
			if err := dp.SetPolicy(dbIngress()); err != nil {
				t.Fatal(err)
			}
			if err := dp.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			first := dp.Stats()
			if err := dp.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			if err := dp.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			if s := dp.Stats(); s.ChainsWritten != first.ChainsWritten || s.SetsWritten != first.SetsWritten {
				t.Fatalf("resync of an untouched kernel rewrote %d chains and %d sets",
					s.ChainsWritten-first.ChainsWritten, s.SetsWritten-first.SetsWritten)
			}

			// Drift: a flushed chain, a removed hook, a removed set member,
			// a rule inserted into one of our chains.
			var setName string
			sh(ipt, "-F", "cx-tw-cxdb")
			sh(ipt, "-D", "INPUT", "-m", "comment", "--comment", strings.Split(hookLine(hooks[3]), `"`)[1], "-j", "cx-INPUT")
			sh(ipt, "-I", "cx-fw-cxweb", "-j", "ACCEPT")
			for _, name := range strings.Fields(sh("ipset", "list", "-n")) {
				if strings.HasPrefix(name, "cx-s-") {
					setName = name
				}
			}
			sh("ipset", "del", setName, "10.244.0.2")
			if err := dp.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			before := dp.Stats()
			if err := dp.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			after := dp.Stats()
			if n := after.ChainsWritten - before.ChainsWritten; n != 2 {
				t.Errorf("repair rewrote %d chains, want 2 (cx-tw-cxdb, cx-fw-cxweb)", n)
			}
			if n := after.MembersChanged - before.MembersChanged; n != 1 {
				t.Errorf("repair changed %d set members, want 1", n)
			}
			save := sh(bin.save)
			for _, want := range []string{"-A INPUT -m comment", "-A KUBE-FOO -j RETURN", "-A FORWARD -s 192.0.2.1/32 -j DROP"} {
				if !strings.Contains(save, want) {
					t.Errorf("after repair, iptables-save lacks %q:\n%s", want, save)
				}
			}
			if strings.Count(save, "-j cx-FORWARD") != 1 || strings.Count(save, "-j cx-INPUT") != 1 {
				t.Errorf("hooks not exactly once:\n%s", save)
			}
			if !strings.Contains(sh("ipset", "list", setName), "10.244.0.2") {
				t.Errorf("set member not restored")
			}

			if err := dp.RemoveAll(ctx); err != nil {
				t.Fatal(err)
			}
			save = sh(bin.save) + sh(iptablesBinaries(backend, V6).save)
			if strings.Contains(save, "cx-") || strings.Contains(save, "cx:") {
				t.Errorf("RemoveAll left:\n%s", save)
			}
			if !strings.Contains(save, "KUBE-FOO") || !strings.Contains(save, "192.0.2.1") {
				t.Errorf("RemoveAll touched someone else's rules:\n%s", save)
			}
			if sets := strings.TrimSpace(sh("ipset", "list", "-n")); sets != "kube-set" {
				t.Errorf("sets after RemoveAll: %q", sets)
			}
		})
	}
}

// TestRandomStatesInKernel walks one Dataplane through random desired
// states in a namespace. After each Apply the kernel must hold exactly what
// a fresh Render of that state gives (so incremental updates from any state
// to any other are right), the real iptables-restore and ipset must accept
// it, and a resync must find nothing to rewrite.
func TestRandomStatesInKernel(t *testing.T) {
	skipUnlessLab(t)
	ctx := context.Background()
	lab := netlab.New("policy")
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	ns, err := lab.NS(ctx, "rs")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node-a", IPv6: true, FailsafeInbound: []ProtoPort{{"tcp", 22}},
		CommandPrefix: []string{"ip", "netns", "exec", ns}}
	dp, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var prev *refModel
	steps := 25
	if testing.Short() {
		steps = 5
	}
	for seed := range uint64(steps) {
		m := genModel(rand.New(rand.NewPCG(seed, 7)))
		if prev != nil {
			for _, p := range prev.policies {
				dp.DeletePolicy(p.Metadata.Name)
			}
			for _, w := range prev.endpoints {
				dp.DeleteEndpoint(w.Metadata.Name)
			}
		}
		for _, w := range m.endpoints {
			if err := dp.SetEndpoint(w); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range m.policies {
			if err := dp.SetPolicy(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := dp.SetPools(m.pools); err != nil {
			t.Fatal(err)
		}
		if err := dp.Apply(ctx); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		r, err := Render(m.cfg, m.policies, m.endpoints, m.pools)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range r.Families() {
			for _, tb := range tables {
				out, err := netlab.Exec(ctx, ns, iptablesBinaries(BackendDefault, f).save, "-t", string(tb))
				if err != nil {
					t.Fatal(err)
				}
				kt := parseIptablesSave([]byte(out))[tb]
				want := r.Chains(f, tb)
				if len(kt.chains) != len(want) {
					t.Errorf("seed %d IPv%d %s: kernel has %d cx- chains, render %d", seed, f, tb, len(kt.chains), len(want))
				}
				for _, c := range want {
					if !slices.Equal(kt.chains[c.Name], c.Hashes) {
						t.Errorf("seed %d IPv%d %s: chain %s differs from a fresh render", seed, f, tb, c.Name)
					}
				}
			}
		}
		before := dp.Stats()
		if err := dp.Resync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := dp.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		if after := dp.Stats(); after.ChainsWritten != before.ChainsWritten || after.MembersChanged != before.MembersChanged {
			t.Errorf("seed %d: resync rewrote %d chains and %d members", seed,
				after.ChainsWritten-before.ChainsWritten, after.MembersChanged-before.MembersChanged)
		}
		prev = m
	}
}
