package policy

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/netlab"
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

			// web is open: no chains of its own, entries in the open sets.
			if strings.Contains(sh(bin.save), "cx-fw-cxweb") {
				t.Error("open endpoint web has chains")
			}
			if got := sh("ipset", "list", "cx-open-wl"); !strings.Contains(got, "10.244.0.2,cxweb") {
				t.Errorf("web not in the open set:\n%s", got)
			}

			// Drift: a flushed chain, a removed hook, a removed set member,
			// a rule inserted into one of our chains, an entry removed
			// from the open set.
			var setName string
			sh(ipt, "-F", "cx-tw-cxdb")
			sh(ipt, "-D", "INPUT", "-m", "comment", "--comment", strings.Split(hookLine(hooks[3]), `"`)[1], "-j", "cx-INPUT")
			sh(ipt, "-I", "cx-fw-cxdb", "-j", "ACCEPT")
			for _, name := range strings.Fields(sh("ipset", "list", "-n")) {
				if strings.HasPrefix(name, "cx-s-") {
					setName = name
				}
			}
			sh("ipset", "del", setName, "10.244.0.2")
			sh("ipset", "del", "cx-open-wl", "10.244.0.2,cxweb")
			if err := dp.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			before := dp.Stats()
			if err := dp.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			after := dp.Stats()
			if n := after.ChainsWritten - before.ChainsWritten; n != 2 {
				t.Errorf("repair rewrote %d chains, want 2 (cx-tw-cxdb, cx-fw-cxdb)", n)
			}
			if n := after.MembersChanged - before.MembersChanged; n != 2 {
				t.Errorf("repair changed %d set members, want 2", n)
			}
			if after.NetlinkWrites != before.NetlinkWrites+1 {
				t.Errorf("set members not repaired over netlink (%d netlink writes)", after.NetlinkWrites-before.NetlinkWrites)
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
			if !strings.Contains(sh("ipset", "list", "cx-open-wl"), "10.244.0.2,cxweb") {
				t.Errorf("open set entry not restored")
			}

			// A flushed open set is refilled, and nothing else is written.
			sh("ipset", "flush", "cx-open6-wl")
			if err := dp.Resync(ctx); err != nil {
				t.Fatal(err)
			}
			before = dp.Stats()
			if err := dp.Apply(ctx); err != nil {
				t.Fatal(err)
			}
			after = dp.Stats()
			if n := after.MembersChanged - before.MembersChanged; n != 3 || after.ChainsWritten != before.ChainsWritten {
				t.Errorf("refilling cx-open6-wl changed %d members (want 3: fd00::2, fe80::/10, ff00::/8) and %d chains",
					n, after.ChainsWritten-before.ChainsWritten)
			}
			got := sh("ipset", "list", "cx-open6-wl")
			for _, want := range []string{"fd00::2,cxweb", "fe80::/10,cxweb", "ff00::/8,cxweb"} {
				if !strings.Contains(got, want) {
					t.Errorf("cx-open6-wl lacks %s after the refill:\n%s", want, got)
				}
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
		if diff := kernelDiff(ctx, t, ns, r); diff != "" {
			t.Errorf("seed %d: kernel differs from a fresh render:\n%s", seed, diff)
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

// TestProgramEndpointBesideRun does what the agent does: Run applies in
// the background (every SetEndpoint pokes it) while the ADD path calls
// ProgramEndpoint. Each endpoint must be in its set when ProgramEndpoint
// returns, and the kernel must end as a fresh render says.
func TestProgramEndpointBesideRun(t *testing.T) {
	skipUnlessLab(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lab := netlab.New("policy")
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	ns, err := lab.NS(ctx, "run")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node-a", IPv6: true, CommandPrefix: []string{"ip", "netns", "exec", ns}}
	dp, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	eps := []*datastore.WorkloadEndpoint{testEndpoint("db", "cxdb", "10.244.0.3/32", map[string]string{"app": "db"})}
	if err := dp.SetEndpoint(eps[0]); err != nil {
		t.Fatal(err)
	}
	pols := []*datastore.Policy{dbIngress()}
	if err := dp.SetPolicy(pols[0]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- dp.Run(ctx) }()
	for i := range 20 {
		w := testEndpoint(fmt.Sprintf("web-%d", i), fmt.Sprintf("cxweb%d", i), fmt.Sprintf("10.244.0.%d/32", 10+i), map[string]string{"app": "web"})
		eps = append(eps, w)
		if err := dp.SetEndpoint(w); err != nil {
			t.Fatal(err)
		}
		if err := dp.ProgramEndpoint(ctx, w.Metadata.Name); err != nil {
			t.Fatal(err)
		}
		entry := fmt.Sprintf("10.244.0.%d,cxweb%d", 10+i, i)
		if _, err := netlab.Exec(ctx, ns, "ipset", "test", "cx-open-wl", entry); err != nil {
			t.Fatalf("%s not in cx-open-wl when ProgramEndpoint returned: %v", entry, err)
		}
	}
	cancel()
	<-done
	if err := dp.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := Render(cfg, pols, eps, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := netlab.Exec(context.Background(), ns, "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	ks, err := parseIpsetSave([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range r.Sets() {
		if got := ks[want.Name]; got == nil || !maps.Equal(got.members, want.Members) {
			t.Errorf("set %s differs from a fresh render", want.Name)
		}
	}
	if dp.Stats().NetlinkWrites == 0 {
		t.Error("no set write went over netlink")
	}
}
