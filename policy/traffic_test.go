package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/netlab"
)

// trafficLab is one host namespace with web, db and other workloads, a
// remote "web" address behind the uplink, and a Dataplane aimed at the host.
type trafficLab struct {
	t     *testing.T
	ctx   context.Context
	lab   *netlab.Lab
	host  *netlab.Host
	wl    map[string]*netlab.Workload
	dp    *Dataplane
	execs *countingRunner
	eps   map[string]*datastore.WorkloadEndpoint
	remIP netip.Addr
}

func skipUnlessLab(t *testing.T) {
	t.Helper()
	if why := netlab.Available(); why != "" {
		t.Skip(why)
	}
	for _, bin := range []string{"iptables-restore", "ipset"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s", bin)
		}
	}
}

func newTrafficLab(t *testing.T, cfg Config) *trafficLab {
	skipUnlessLab(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	lab := netlab.New("policy")
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("removing the lab: %v", err)
		}
	})
	host, err := lab.AddHost(ctx, "h")
	if err != nil {
		t.Fatal(err)
	}
	tl := &trafficLab{t: t, ctx: ctx, lab: lab, host: host, wl: map[string]*netlab.Workload{},
		eps: map[string]*datastore.WorkloadEndpoint{}, remIP: netip.MustParseAddr("10.244.9.9")}
	for i, app := range []string{"web", "db", "other"} {
		v4 := netip.MustParseAddr(fmt.Sprintf("10.244.0.%d", i+2))
		v6 := netip.MustParseAddr(fmt.Sprintf("fd00:244::%d", i+2))
		w, err := host.AddWorkload(ctx, app, "cx"+app, v4, v6)
		if err != nil {
			t.Fatal(err)
		}
		tl.wl[app] = w
		tl.eps[app] = &datastore.WorkloadEndpoint{
			Metadata: datastore.Metadata{Name: "ep-" + app, Labels: map[string]string{"app": app}},
			Spec: datastore.WorkloadEndpointSpec{Node: "node-a", InterfaceName: "cx" + app,
				IPNetworks: []string{v4.String() + "/32", v6.String() + "/128"}},
		}
		for _, a := range []netip.Addr{v4, v6} {
			for _, port := range []uint16{5432, 80} {
				if err := netlab.ServeTCP(ctx, w.NS, netip.AddrPortFrom(a, port)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// A remote workload: an address in the uplink namespace, routed via
	// the host, known to the Dataplane as an endpoint of another node.
	for _, s := range [][]string{
		{"ip", "addr", "add", tl.remIP.String() + "/32", "dev", "lo"},
		{"ip", "route", "add", "10.244.0.0/16", "via", netlab.HostUplinkV4.String(), "src", tl.remIP.String()},
	} {
		if _, err := netlab.Exec(ctx, host.Uplink, s...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netlab.Exec(ctx, host.NS, "ip", "route", "add", tl.remIP.String()+"/32", "via", netlab.UplinkPeerV4.String()); err != nil {
		t.Fatal(err)
	}
	tl.eps["remote-web"] = &datastore.WorkloadEndpoint{
		Metadata: datastore.Metadata{Name: "remote-web", Labels: map[string]string{"app": "web"}},
		Spec:     datastore.WorkloadEndpointSpec{Node: "node-b", InterfaceName: "cxremote", IPNetworks: []string{tl.remIP.String() + "/32"}},
	}
	for _, port := range []uint16{7000, 22, 8080} {
		if err := netlab.ServeTCP(ctx, host.Uplink, netip.AddrPortFrom(netlab.UplinkPeerV4, port)); err != nil {
			t.Fatal(err)
		}
	}
	for _, port := range []uint16{22, 8080} {
		if err := netlab.ServeTCP(ctx, host.NS, netip.AddrPortFrom(netlab.HostUplinkV4, port)); err != nil {
			t.Fatal(err)
		}
	}

	cfg.NodeName = "node-a"
	cfg.CommandPrefix = []string{"ip", "netns", "exec", host.NS}
	cfg.NetNS = netnsRunDir + host.NS // what New derives from the prefix
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tl.execs = &countingRunner{r: ExecRunner{Prefix: cfg.CommandPrefix}}
	dp, err := NewWithRunner(cfg, log, tl.execs)
	if err != nil {
		t.Fatal(err)
	}
	tl.dp = dp
	for _, name := range []string{"web", "db", "other", "remote-web"} {
		if err := dp.SetEndpoint(tl.eps[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := dp.SetPools([]*datastore.IPPool{{Metadata: datastore.Metadata{Name: "p"},
		Spec: datastore.IPPoolSpec{CIDR: "10.244.0.0/16", NATOutgoing: true}}}); err != nil {
		t.Fatal(err)
	}
	tl.apply()
	return tl
}

// countingRunner runs the real commands and counts them.
type countingRunner struct {
	r ExecRunner
	n atomic.Int64
}

func (c *countingRunner) Run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	c.n.Add(1)
	return c.r.Run(ctx, stdin, argv...)
}

func (tl *trafficLab) apply() {
	tl.t.Helper()
	if err := tl.dp.Apply(tl.ctx); err != nil {
		tl.t.Fatalf("apply: %v", err)
	}
}

func (tl *trafficLab) setPolicy(p *datastore.Policy) {
	tl.t.Helper()
	if err := tl.dp.SetPolicy(p); err != nil {
		tl.t.Fatal(err)
	}
	tl.apply()
}

// addrOf picks a workload's address of one family.
func (tl *trafficLab) addrOf(name string, f Family) netip.Addr {
	if f == V6 {
		return tl.wl[name].IPv6
	}
	return tl.wl[name].IPv4
}

// expectTCP checks, polling until a deadline, that a TCP connection from
// one namespace to an address does (or does not) go through.
func (tl *trafficLab) expectTCP(fromNS string, to netip.AddrPort, want bool) string {
	tl.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		timeout := 2 * time.Second
		if !want {
			timeout = 400 * time.Millisecond
		}
		greeting, err := netlab.DialTCP(fromNS, to, timeout)
		if (err == nil) == want {
			return greeting
		}
		if time.Now().After(deadline) {
			if want {
				tl.t.Fatalf("%s -> %s: want connected, got %v", fromNS, to, err)
			}
			tl.t.Fatalf("%s -> %s: want blocked, but it connected", fromNS, to)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (tl *trafficLab) expectWL(from, to string, port uint16, f Family, want bool) {
	tl.t.Helper()
	tl.expectTCP(tl.wl[from].NS, netip.AddrPortFrom(tl.addrOf(to, f), port), want)
}

func (tl *trafficLab) expectPing(fromNS string, src, dst netip.Addr, want bool) {
	tl.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := netlab.Ping(fromNS, src, dst, 500*time.Millisecond)
		if (err == nil) == want {
			return
		}
		if time.Now().After(deadline) {
			tl.t.Fatalf("ping %s -> %s from %s: want success=%v, got err=%v", src, dst, fromNS, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ourRules is the cx- part of iptables-save for a family's filter table.
func (tl *trafficLab) ourRules(f Family) string {
	tl.t.Helper()
	bin := "iptables-save"
	if f == V6 {
		bin = "ip6tables-save"
	}
	out, err := netlab.Exec(tl.ctx, tl.host.NS, bin, "-t", "filter")
	if err != nil {
		tl.t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, ":cx-") || strings.HasPrefix(l, "-A cx-") || strings.Contains(l, "cx:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func tcpRule(action datastore.Action, port uint16, src string) datastore.Rule {
	p, _ := datastore.ParseProtocol("tcp")
	r := datastore.Rule{Action: action, Protocol: &p, Source: datastore.EntityRule{Selector: src}}
	if port != 0 {
		r.Destination.Ports = []datastore.Port{{MinPort: port, MaxPort: port}}
	}
	return r
}

func icmpRule(action datastore.Action, src string) datastore.Rule {
	p, _ := datastore.ParseProtocol("icmp")
	return datastore.Rule{Action: action, Protocol: &p, Source: datastore.EntityRule{Selector: src}}
}

func order(o float64) *float64 { return &o }

func dbIngress() *datastore.Policy {
	return &datastore.Policy{
		Metadata: datastore.Metadata{Name: "db-ingress"},
		Spec: datastore.PolicySpec{Order: order(100), Selector: `app == "db"`, Ingress: []datastore.Rule{
			tcpRule(datastore.ActionAllow, 5432, `app == "web"`),
			icmpRule(datastore.ActionAllow, `app == "web"`),
		}},
	}
}

// TestTrafficIPv4 runs real packets through the programmed chains: the
// db/web/other scenario, order and Pass, a label flip without chain
// rewrites, deletion, drift repair, spoofing, fail-closed new interfaces,
// workload-to-host traffic under egress policy, CIDR rules and natOutgoing.
func TestTrafficIPv4(t *testing.T) {
	tl := newTrafficLab(t, Config{IPv6: true})
	const v = V4

	t.Run("no policy: open", func(t *testing.T) {
		tl.t = t
		tl.expectWL("web", "db", 5432, v, true)
		tl.expectWL("other", "db", 5432, v, true)
		tl.expectPing(tl.wl["other"].NS, netip.Addr{}, tl.addrOf("db", v), true)
	})

	t.Run("db accepts 5432 from web only", func(t *testing.T) {
		tl.t = t
		tl.setPolicy(dbIngress())
		tl.expectWL("web", "db", 5432, v, true)
		tl.expectWL("other", "db", 5432, v, false)
		tl.expectWL("web", "db", 80, v, false)
		tl.expectTCP(tl.host.Uplink, netip.AddrPortFrom(tl.addrOf("db", v), 5432), true) // remote web
		tl.expectPing(tl.wl["web"].NS, netip.Addr{}, tl.addrOf("db", v), true)
		tl.expectPing(tl.wl["other"].NS, netip.Addr{}, tl.addrOf("db", v), false)
		tl.expectWL("db", "other", 5432, v, true) // db's egress is not selected
	})

	t.Run("label change flips access without rewriting chains", func(t *testing.T) {
		tl.t = t
		before := tl.ourRules(v)
		written := tl.dp.Stats().ChainsWritten
		other := *tl.eps["other"]
		other.Metadata.Labels = map[string]string{"app": "web"}
		if err := tl.dp.SetEndpoint(&other); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		tl.apply()
		tl.expectWL("other", "db", 5432, v, true)
		if d := time.Since(start); d > time.Second {
			t.Errorf("access flipped after %v, want within a second", d)
		}
		if got := tl.dp.Stats().ChainsWritten; got != written {
			t.Errorf("label change rewrote %d chains", got-written)
		}
		if after := tl.ourRules(v); after != before {
			t.Errorf("iptables-save changed on a label change:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if err := tl.dp.SetEndpoint(tl.eps["other"]); err != nil {
			t.Fatal(err)
		}
		tl.apply()
		tl.expectWL("other", "db", 5432, v, false)
	})

	t.Run("order and pass", func(t *testing.T) {
		tl.t = t
		gate := &datastore.Policy{
			Metadata: datastore.Metadata{Name: "db-gate"},
			Spec: datastore.PolicySpec{Order: order(10), Selector: `app == "db"`, Ingress: []datastore.Rule{
				tcpRule(datastore.ActionPass, 0, `app == "other"`),
				tcpRule(datastore.ActionDeny, 0, ""),
			}},
		}
		others := &datastore.Policy{
			Metadata: datastore.Metadata{Name: "db-others"},
			Spec: datastore.PolicySpec{Order: order(200), Selector: `app == "db"`, Ingress: []datastore.Rule{
				tcpRule(datastore.ActionAllow, 5432, `app == "other"`),
			}},
		}
		tl.setPolicy(others)
		tl.setPolicy(gate)
		tl.expectWL("web", "db", 5432, v, false)  // the gate denies before db-ingress allows
		tl.expectWL("other", "db", 5432, v, true) // passed on to db-ingress, then db-others
		gate.Spec.Order = order(300)
		tl.setPolicy(gate)
		tl.expectWL("web", "db", 5432, v, true)
		tl.expectWL("other", "db", 5432, v, true)
		gate.Spec.Order = nil // nil order sorts last as well
		tl.setPolicy(gate)
		tl.expectWL("web", "db", 5432, v, true)
		tl.dp.DeletePolicy("db-gate")
		tl.dp.DeletePolicy("db-others")
		tl.apply()
		tl.expectWL("other", "db", 5432, v, false)
	})

	t.Run("egress policy and CIDR rule", func(t *testing.T) {
		tl.t = t
		proto, _ := datastore.ParseProtocol("tcp")
		tl.setPolicy(&datastore.Policy{
			Metadata: datastore.Metadata{Name: "web-egress"},
			Spec: datastore.PolicySpec{Order: order(100), Selector: `app == "web"`, Types: []datastore.PolicyType{datastore.PolicyTypeEgress},
				Egress: []datastore.Rule{
					{Action: datastore.ActionAllow, Protocol: &proto, Destination: datastore.EntityRule{
						Selector: `app == "db"`, Ports: []datastore.Port{{MinPort: 5432, MaxPort: 5432}}}},
					{Action: datastore.ActionAllow, Protocol: &proto, Destination: datastore.EntityRule{
						Nets: []string{netlab.UplinkPeerV4.String() + "/32"}, Ports: []datastore.Port{{MinPort: 7000, MaxPort: 7000}}}},
				}},
		})
		tl.expectWL("web", "db", 5432, v, true)
		tl.expectWL("web", "other", 5432, v, false)
		greeting := tl.expectTCP(tl.wl["web"].NS, netip.AddrPortFrom(netlab.UplinkPeerV4, 7000), true)
		// natOutgoing: the uplink sees the host's address, not the pool's.
		if !strings.Contains(greeting, netlab.HostUplinkV4.String()+":") {
			t.Errorf("web -> outside not masqueraded: server saw %q", greeting)
		}
		tl.expectTCP(tl.wl["web"].NS, netip.AddrPortFrom(netlab.UplinkPeerV4, 8080), false)
	})

	t.Run("workload to host: egress policy first, failsafe ports included", func(t *testing.T) {
		tl.t = t
		// web's egress policy allows db:5432 and the uplink's 7000 only:
		// SSH on its own host (a failsafe port) is closed to it too.
		tl.expectTCP(tl.wl["web"].NS, netip.AddrPortFrom(netlab.HostUplinkV4, 22), false)
		tl.expectTCP(tl.wl["web"].NS, netip.AddrPortFrom(netlab.HostUplinkV4, 8080), false)
		tl.expectTCP(tl.wl["other"].NS, netip.AddrPortFrom(netlab.HostUplinkV4, 22), true)
		tl.expectTCP(tl.wl["other"].NS, netip.AddrPortFrom(netlab.HostUplinkV4, 8080), true)
	})

	t.Run("drift: a flushed chain is repaired", func(t *testing.T) {
		tl.t = t
		want := tl.ourRules(v)
		ctx, cancel := context.WithCancel(tl.ctx)
		defer cancel()
		tl.dp.cfg.ResyncInterval = 200 * time.Millisecond
		done := make(chan error, 1)
		go func() { done <- tl.dp.Run(ctx) }()
		if _, err := netlab.Exec(tl.ctx, tl.host.NS, "iptables", "-F", "cx-fw-cxweb"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for tl.ourRules(v) != want {
			if time.Now().After(deadline) {
				t.Fatalf("chain not repaired:\n%s", tl.ourRules(v))
			}
			time.Sleep(100 * time.Millisecond)
		}
		tl.expectWL("web", "other", 5432, v, false) // closed again
		cancel()
		<-done
	})

	t.Run("deleting a policy reopens", func(t *testing.T) {
		tl.t = t
		tl.dp.DeletePolicy("web-egress")
		tl.dp.DeletePolicy("db-ingress")
		tl.apply()
		tl.expectWL("web", "other", 5432, v, true)
		tl.expectWL("other", "db", 5432, v, true)
	})

	t.Run("spoofed source is dropped", func(t *testing.T) {
		tl.t = t
		spoof := netip.MustParseAddr("10.244.0.200")
		if _, err := netlab.Exec(tl.ctx, tl.wl["web"].NS, "ip", "addr", "add", spoof.String()+"/32", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		tl.expectPing(tl.wl["web"].NS, tl.addrOf("web", v), tl.addrOf("db", v), true)
		tl.expectPing(tl.wl["web"].NS, spoof, tl.addrOf("db", v), false)
		// Someone else's address: db's, sent from web's interface.
		if _, err := netlab.Exec(tl.ctx, tl.wl["web"].NS, "ip", "addr", "add", tl.addrOf("other", v).String()+"/32", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
		tl.expectPing(tl.wl["web"].NS, tl.addrOf("other", v), tl.addrOf("db", v), false)
	})

	t.Run("unknown workload interface is blocked until programmed", func(t *testing.T) {
		tl.t = t
		v4 := netip.MustParseAddr("10.244.0.50")
		w, err := tl.host.AddWorkload(tl.ctx, "new", "cxnew", v4, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		tl.expectPing(w.NS, netip.Addr{}, tl.addrOf("db", v), false)
		if err := tl.dp.SetEndpoint(&datastore.WorkloadEndpoint{
			Metadata: datastore.Metadata{Name: "ep-new"},
			Spec:     datastore.WorkloadEndpointSpec{Node: "node-a", InterfaceName: "cxnew", IPNetworks: []string{v4.String() + "/32"}},
		}); err != nil {
			t.Fatal(err)
		}
		tl.apply()
		tl.expectPing(w.NS, netip.Addr{}, tl.addrOf("db", v), true)
	})

	t.Run("RemoveAll leaves nothing behind", func(t *testing.T) {
		tl.t = t
		if err := tl.dp.RemoveAll(tl.ctx); err != nil {
			t.Fatal(err)
		}
		for _, f := range []Family{V4, V6} {
			if left := tl.ourRules(f); left != "" {
				t.Errorf("IPv%d rules left:\n%s", f, left)
			}
		}
		out, err := netlab.Exec(tl.ctx, tl.host.NS, "ipset", "list", "-n")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) != "" {
			t.Errorf("sets left: %s", out)
		}
	})
}

// TestTrafficIPv6 checks the same model through ip6tables and inet6 sets.
func TestTrafficIPv6(t *testing.T) {
	tl := newTrafficLab(t, Config{IPv6: true})
	const v = V6
	tl.expectWL("other", "db", 5432, v, true)
	tl.setPolicy(dbIngress())
	icmp6, _ := datastore.ParseProtocol("icmpv6")
	p := dbIngress()
	p.Spec.Ingress = append(p.Spec.Ingress, datastore.Rule{Action: datastore.ActionAllow, Protocol: &icmp6,
		Source: datastore.EntityRule{Selector: `app == "web"`}})
	tl.setPolicy(p)
	tl.expectWL("web", "db", 5432, v, true)
	tl.expectWL("other", "db", 5432, v, false)
	tl.expectPing(tl.wl["web"].NS, netip.Addr{}, tl.addrOf("db", v), true)
	tl.expectPing(tl.wl["other"].NS, netip.Addr{}, tl.addrOf("db", v), false)

	// An egress default deny must not break neighbour discovery to the host.
	tl.setPolicy(&datastore.Policy{
		Metadata: datastore.Metadata{Name: "web-egress"},
		Spec: datastore.PolicySpec{Selector: `app == "web"`, Types: []datastore.PolicyType{datastore.PolicyTypeEgress},
			Egress: []datastore.Rule{tcpRule(datastore.ActionAllow, 5432, "")}},
	})
	if _, err := netlab.Exec(tl.ctx, tl.wl["web"].NS, "ip", "-6", "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	tl.expectWL("web", "db", 5432, v, true)
	tl.expectWL("web", "db", 80, v, false)

	spoof := netip.MustParseAddr("fd00:244::200")
	if _, err := netlab.Exec(tl.ctx, tl.wl["other"].NS, "ip", "addr", "add", spoof.String()+"/128", "dev", "eth0", "nodad"); err != nil {
		t.Fatal(err)
	}
	tl.dp.DeletePolicy("db-ingress")
	tl.apply()
	tl.expectPing(tl.wl["other"].NS, tl.addrOf("other", v), tl.addrOf("db", v), true)
	tl.expectPing(tl.wl["other"].NS, spoof, tl.addrOf("db", v), false)
}
