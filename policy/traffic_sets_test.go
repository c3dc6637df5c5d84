package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/netlab"
)

// ruleSets lists the rule sets (cx-s-, cx-n- and their IPv6 twins) in the
// host namespace.
func (tl *trafficLab) ruleSets() []string {
	tl.t.Helper()
	out, err := netlab.Exec(tl.ctx, tl.host.NS, "ipset", "list", "-n")
	if err != nil {
		tl.t.Fatal(err)
	}
	var sets []string
	for _, name := range strings.Fields(out) {
		if isRuleSet(name) {
			sets = append(sets, name)
		}
	}
	slices.Sort(sets)
	return sets
}

// connectsNow dials once: traffic must be right on the first try, right
// after the call that programmed it returned. A refused connection is
// dropped silently, so a short timeout tells it.
func (tl *trafficLab) connectsNow(fromNS string, to netip.AddrPort, timeout time.Duration) bool {
	_, err := netlab.DialTCP(fromNS, to, timeout)
	return err == nil
}

// TestTrafficSetsFollowActivePolicies is the soak test's finding with real
// packets: a policy that selects no workload on this host has no set here
// (and a remote endpoint's label change costs the host nothing); when a
// local workload becomes selected its sets are in the kernel, filled,
// when ProgramEndpoint or Apply returns, so traffic is right at once; when
// the last selected workload leaves or is deleted, chains and sets go.
func TestTrafficSetsFollowActivePolicies(t *testing.T) {
	tl := newTrafficLab(t, Config{IPv6: true})
	tl.setPolicy(bIngress(`app == "web"`))
	webSet := selectorSetName(mustSel(`app == "web"`).UniqueID(), V4)

	t.Run("no set while no local workload is selected", func(t *testing.T) {
		tl.t = t
		if sets := tl.ruleSets(); len(sets) != 0 {
			t.Errorf("sets of a policy that selects nothing here: %v", sets)
		}
		if strings.Contains(tl.ourRules(V4), "cx-pi-") {
			t.Errorf("policy chain of a policy that selects nothing here:\n%s", tl.ourRules(V4))
		}
		execs, before := tl.execs.n.Load(), tl.dp.Stats()
		remote := *tl.eps["remote-web"]
		remote.Metadata.Labels = map[string]string{"app": "db"}
		for _, w := range []*datastore.WorkloadEndpoint{&remote, tl.eps["remote-web"]} {
			if err := tl.dp.SetEndpoint(w); err != nil {
				t.Fatal(err)
			}
			tl.apply()
		}
		if n := tl.execs.n.Load() - execs; n != 0 || tl.dp.Stats() != before {
			t.Errorf("a remote label change ran %d processes; stats %+v, before %+v", n, tl.dp.Stats(), before)
		}
	})

	v4, v6 := netip.MustParseAddr("10.244.0.60"), netip.MustParseAddr("fd00:244::60")
	w, err := tl.host.AddWorkload(tl.ctx, "b", "cxb", v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	tl.wl["b"] = w
	for _, a := range []netip.Addr{v4, v6} {
		if err := netlab.ServeTCP(tl.ctx, w.NS, netip.AddrPortFrom(a, 5432)); err != nil {
			t.Fatal(err)
		}
	}
	ep := &datastore.WorkloadEndpoint{
		Metadata: datastore.Metadata{Name: "ep-b", Labels: map[string]string{"app": "b"}},
		Spec: datastore.WorkloadEndpointSpec{Node: "node-a", InterfaceName: "cxb",
			IPNetworks: []string{v4.String() + "/32", v6.String() + "/128"}},
	}
	setB := func(app string) {
		t.Helper()
		e := *ep
		e.Metadata.Labels = map[string]string{"app": app}
		if err := tl.dp.SetEndpoint(&e); err != nil {
			t.Fatal(err)
		}
	}
	// selectedNow checks b is policed by b-ingress from the first packet.
	selectedNow := func(t *testing.T) {
		t.Helper()
		for _, f := range []Family{V4, V6} {
			if !tl.connectsNow(tl.wl["web"].NS, netip.AddrPortFrom(tl.addrOf("b", f), 5432), 2*time.Second) {
				t.Errorf("IPv%d: web -> b refused right after programming", f)
			}
			if tl.connectsNow(tl.wl["other"].NS, netip.AddrPortFrom(tl.addrOf("b", f), 5432), 400*time.Millisecond) {
				t.Errorf("IPv%d: other -> b connected right after programming", f)
			}
		}
		// The remote address is in the net set and in web's selector set.
		if !tl.connectsNow(tl.host.Uplink, netip.AddrPortFrom(v4, 5432), 2*time.Second) {
			t.Error("remote web -> b refused right after programming")
		}
		got := tl.ipset(webSet)
		for _, a := range []string{tl.addrOf("web", V4).String(), tl.remIP.String()} {
			if !strings.Contains(got, "\n"+a+"\n") {
				t.Errorf("%s lacks %s:\n%s", webSet, a, got)
			}
		}
	}
	// inactive checks that b-ingress holds nothing here any more.
	inactive := func(t *testing.T) {
		t.Helper()
		if sets := tl.ruleSets(); len(sets) != 0 {
			t.Errorf("sets left after the last selected workload went: %v", sets)
		}
		if rules := tl.ourRules(V4); strings.Contains(rules, "cx-pi-") || strings.Contains(rules, "cxb") {
			t.Errorf("chains left after the last selected workload went:\n%s", rules)
		}
	}

	t.Run("a new selected workload gets its sets with ProgramEndpoint", func(t *testing.T) {
		tl.t = t
		setB("b")
		if err := tl.dp.ProgramEndpoint(tl.ctx, "ep-b"); err != nil {
			t.Fatal(err)
		}
		selectedNow(t)
		sets := tl.ruleSets()
		if len(sets) != 3 { // web's selector in v4 and v6, the CIDR list in v4
			t.Errorf("rule sets %v, want web's selector set in both families and one net set", sets)
		}
	})

	t.Run("leaving the selector removes chains and sets", func(t *testing.T) {
		tl.t = t
		setB("plain")
		tl.apply()
		inactive(t)
		if !tl.connectsNow(tl.wl["other"].NS, netip.AddrPortFrom(v4, 5432), 2*time.Second) {
			t.Error("other -> b refused once b is open")
		}
	})

	t.Run("joining the selector brings them back", func(t *testing.T) {
		tl.t = t
		setB("b")
		tl.apply()
		selectedNow(t)
	})

	t.Run("deleting the last selected workload removes them", func(t *testing.T) {
		tl.t = t
		tl.dp.DeleteEndpoint("ep-b")
		tl.apply()
		inactive(t)
		tl.expectWL("b", "db", 5432, V4, false) // its veth is unknown again: fail closed
	})
}
