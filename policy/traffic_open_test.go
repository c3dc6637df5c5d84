package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/netlab"
)

// TestTrafficOpenEndpoint wires a new workload the way the agent's CNI ADD
// does (SetEndpoint, then ProgramEndpoint) and checks with real packets
// that it is reachable through the open set with no process run, that a
// policy selecting it closes it, that a label change moves it in and out,
// that spoofing is still dropped, and that deleting it closes its veth.
func TestTrafficOpenEndpoint(t *testing.T) {
	tl := newTrafficLab(t, Config{IPv6: true})
	v4, v6 := netip.MustParseAddr("10.244.0.50"), netip.MustParseAddr("fd00:244::50")
	w, err := tl.host.AddWorkload(tl.ctx, "new", "cxnew", v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	tl.wl["new"] = w
	for _, a := range []netip.Addr{v4, v6} {
		if err := netlab.ServeTCP(tl.ctx, w.NS, netip.AddrPortFrom(a, 5432)); err != nil {
			t.Fatal(err)
		}
	}
	tl.expectWL("new", "db", 5432, V4, false) // an unknown cx interface: fail closed

	ep := &datastore.WorkloadEndpoint{
		Metadata: datastore.Metadata{Name: "ep-new", Labels: map[string]string{"app": "fresh"}},
		Spec: datastore.WorkloadEndpointSpec{Node: "node-a", InterfaceName: "cxnew",
			IPNetworks: []string{v4.String() + "/32", v6.String() + "/128"}},
	}
	setEndpoint := func(labels map[string]string) {
		t.Helper()
		e := *ep
		e.Metadata.Labels = labels
		if err := tl.dp.SetEndpoint(&e); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("ProgramEndpoint runs no process and opens it", func(t *testing.T) {
		tl.t = t
		setEndpoint(map[string]string{"app": "fresh"})
		execs, before := tl.execs.n.Load(), tl.dp.Stats()
		start := time.Now()
		if err := tl.dp.ProgramEndpoint(tl.ctx, "ep-new"); err != nil {
			t.Fatal(err)
		}
		t.Logf("ProgramEndpoint of an open endpoint took %v", time.Since(start))
		if n := tl.execs.n.Load() - execs; n != 0 {
			t.Errorf("ProgramEndpoint ran %d processes", n)
		}
		if after := tl.dp.Stats(); after.NetlinkWrites != before.NetlinkWrites+1 || after.ChainsWritten != before.ChainsWritten {
			t.Errorf("stats: %+v, before %+v", after, before)
		}
		for _, f := range []Family{V4, V6} {
			tl.expectWL("new", "db", 5432, f, true)
			tl.expectWL("other", "new", 5432, f, true)
			if strings.Contains(tl.ourRules(f), "cxnew") {
				t.Errorf("IPv%d: the open endpoint has rules of its own:\n%s", f, tl.ourRules(f))
			}
		}
		tl.expectTCP(w.NS, netip.AddrPortFrom(netlab.HostUplinkV4, 8080), true) // to the host
		// From a link-local source to the host, as its empty chain let
		// through before (a fixed address: the automatic one may still be
		// tentative, and ping would pick the global one).
		if _, err := netlab.Exec(tl.ctx, w.NS, "ip", "addr", "add", "fe80::50/64", "dev", "eth0", "nodad"); err != nil {
			t.Fatal(err)
		}
		tl.expectCmd(w.NS, true, "ping", "-6", "-c1", "-W1", "-I", "fe80::50%eth0", netlab.GatewayV6+"%eth0")
		if err := tl.dp.Apply(tl.ctx); err != nil {
			t.Fatal(err)
		}
		if n := tl.execs.n.Load() - execs; n != 0 {
			t.Errorf("the Apply after ProgramEndpoint ran %d processes", n)
		}
	})

	t.Run("a policy selecting it closes it at once", func(t *testing.T) {
		tl.t = t
		p := &datastore.Policy{
			Metadata: datastore.Metadata{Name: "fresh-ingress"},
			Spec: datastore.PolicySpec{Selector: `app == "fresh"`, Ingress: []datastore.Rule{
				tcpRule(datastore.ActionAllow, 5432, `app == "web"`)}},
		}
		start := time.Now()
		tl.setPolicy(p)
		if took := time.Since(start); took > time.Second {
			t.Errorf("closing took %v", took)
		}
		for _, f := range []Family{V4, V6} {
			to := netip.AddrPortFrom(tl.addrOf("new", f), 5432)
			if _, err := netlab.DialTCP(tl.wl["other"].NS, to, 400*time.Millisecond); err == nil {
				t.Errorf("IPv%d: other -> new connected right after the policy was applied", f)
			}
			tl.expectWL("web", "new", 5432, f, true)
			tl.expectWL("new", "db", 5432, f, true) // egress not selected
		}
		if got := tl.ipset("cx-open-wl"); strings.Contains(got, "cxnew") {
			t.Errorf("still in the open set:\n%s", got)
		}
		if !strings.Contains(tl.ourRules(V4), ":cx-tw-cxnew") {
			t.Error("no chain for the selected endpoint")
		}
	})

	t.Run("label change opens and closes it", func(t *testing.T) {
		tl.t = t
		setEndpoint(map[string]string{"app": "plain"})
		tl.apply()
		tl.expectWL("other", "new", 5432, V4, true)
		tl.expectWL("other", "new", 5432, V6, true)
		if strings.Contains(tl.ourRules(V4), "cxnew") || !strings.Contains(tl.ipset("cx-open-wl"), "10.244.0.50,cxnew") {
			t.Errorf("not open after its label left the selector:\n%s", tl.ourRules(V4))
		}
		setEndpoint(map[string]string{"app": "fresh"})
		tl.apply()
		tl.expectWL("other", "new", 5432, V4, false)
		tl.expectWL("web", "new", 5432, V4, true)
		tl.dp.DeletePolicy("fresh-ingress")
		tl.apply()
		tl.expectWL("other", "new", 5432, V4, true)
	})

	t.Run("spoofed source from an open endpoint is dropped", func(t *testing.T) {
		tl.t = t
		for _, a := range []string{"10.244.0.201/32", "fd00:244::201/128"} {
			if _, err := netlab.Exec(tl.ctx, w.NS, "ip", "addr", "add", a, "dev", "eth0", "nodad"); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []Family{V4, V6} {
			spoof := netip.MustParseAddr("10.244.0.201")
			if f == V6 {
				spoof = netip.MustParseAddr("fd00:244::201")
			}
			tl.expectPing(w.NS, tl.addrOf("new", f), tl.addrOf("db", f), true)
			tl.expectPing(w.NS, spoof, tl.addrOf("db", f), false)
		}
	})

	t.Run("DeleteEndpoint removes its entries", func(t *testing.T) {
		tl.t = t
		tl.dp.DeleteEndpoint("ep-new")
		tl.apply()
		for _, set := range []string{"cx-open-wl", "cx-open6-wl"} {
			if got := tl.ipset(set); strings.Contains(got, "cxnew") {
				t.Errorf("%s keeps entries of a deleted endpoint:\n%s", set, got)
			}
		}
		tl.expectWL("new", "db", 5432, V4, false)
	})
}

// ipset lists one set in the host namespace.
func (tl *trafficLab) ipset(name string) string {
	tl.t.Helper()
	out, err := netlab.Exec(tl.ctx, tl.host.NS, "ipset", "list", name)
	if err != nil {
		tl.t.Fatal(err)
	}
	return out
}

// expectCmd polls until a command in ns succeeds (or keeps failing).
func (tl *trafficLab) expectCmd(ns string, want bool, argv ...string) {
	tl.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := netlab.Exec(tl.ctx, ns, argv...)
		if (err == nil) == want {
			return
		}
		if time.Now().After(deadline) {
			tl.t.Fatalf("%s in %s: want success=%v, got %v", strings.Join(argv, " "), ns, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
