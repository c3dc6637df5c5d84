package lab

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

func TestDualStackOptions(t *testing.T) {
	o, err := Options{Dir: t.TempDir(), IPv6: true}.withDefaults()
	if err != nil || o.Pool6 != DefaultPool6 {
		t.Fatalf("defaults with IPv6: pool6 %q, %v", o.Pool6, err)
	}
	for _, bad := range []Options{
		{Dir: t.TempDir(), IPv6: true, Pool6: "10.1.0.0/16"},         // not IPv6
		{Dir: t.TempDir(), IPv6: true, Pool6: "fd00::1/64"},          // host bits
		{Dir: t.TempDir(), IPv6: true, Pool6: "fd18::/48"},           // overlaps the fabric
		{Dir: t.TempDir(), IPv6: true, Pool6: "::ffff:10.0.0.0/104"}, // IPv4-mapped
		{Dir: t.TempDir(), Pool6: "fd00:1::/56"},                     // without IPv6
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if o, err := (Options{Dir: t.TempDir()}).withDefaults(); err != nil || o.Pool6 != "" {
		t.Errorf("IPv4-only defaults: pool6 %q, %v", o.Pool6, err)
	}
}

func TestDualStackClusterResources(t *testing.T) {
	o := Options{Hosts: 3, Peer: PeerBird, IPv6: true, Pool: DefaultPool, Pool6: DefaultPool6}
	pools, peers := map[string]string{}, map[string]string{}
	for _, r := range ClusterResources(o) {
		if err := datastore.Validate(r); err != nil {
			t.Errorf("%s: %v", datastore.Describe(r), err)
		}
		switch r := r.(type) {
		case *datastore.IPPool:
			pools[r.Metadata.Name] = r.Spec.CIDR
		case *datastore.BGPPeer:
			peers[r.Metadata.Name] = r.Spec.PeerIP
		}
	}
	if pools["lab-pool"] != DefaultPool || pools["lab-pool6"] != DefaultPool6 || len(pools) != 2 {
		t.Errorf("pools %v", pools)
	}
	if peers["tor"] != TorIP || peers["tor6"] != TorIPv6 || len(peers) != 2 {
		t.Errorf("peers %v", peers)
	}
	if got := expectedPeers(o, 1); got != 4 {
		t.Errorf("expectedPeers = %d, want 2 mesh + 2 ToR sessions", got)
	}
	argv := AgentArgv(o, Host{Name: "host2", IP: HostIP(2), IPv6: HostIPv6(2)})
	if i := slices.Index(argv, "--node-ipv6"); i < 0 || argv[i+1] != "fd18::2" {
		t.Errorf("agent argv %v lacks --node-ipv6 fd18::2", argv)
	}
	if argv := AgentArgv(Options{}, Host{Name: "host2", IP: HostIP(2)}); slices.Contains(argv, "--node-ipv6") {
		t.Errorf("IPv4-only agent argv %v has --node-ipv6", argv)
	}
}

func TestDualStackBirdConfigParses(t *testing.T) {
	cfg := birdConfig(3, true)
	for _, want := range []string{
		"neighbor " + HostIP(3) + " as 64512", "protocol bgp host3_v6 from calyxhost6 { neighbor fd18::3 as 64512; }",
		"local " + TorIPv6 + " as 65000", TorStaticRoute, TorStaticRoute6, "ipv6 { import none; export where source = RTS_BGP; }",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(birdConfig(3, false), "ipv6") {
		t.Error("IPv4-only config mentions ipv6")
	}
	bird, err := lookTool("bird")
	if err != nil {
		t.Skip("bird not installed: only the text was checked")
	}
	path := filepath.Join(t.TempDir(), "bird.conf")
	os.WriteFile(path, []byte(cfg), 0o644)
	if out, err := exec.Command(bird, "-p", "-c", path).CombinedOutput(); err != nil {
		t.Errorf("bird -p rejects the config: %v: %s\n%s", err, out, cfg)
	}
}

func TestWorkloadAddressesByFamily(t *testing.T) {
	w := Workload{IPs: []string{"fd00::5", "10.0.0.5"}}
	if w.IPv4() != "10.0.0.5" || w.IPv6() != "fd00::5" || w.IP() != "fd00::5" {
		t.Errorf("IPv4 %q IPv6 %q IP %q", w.IPv4(), w.IPv6(), w.IP())
	}
	if w := (Workload{IPs: []string{"10.0.0.5"}}); w.IPv6() != "" {
		t.Errorf("IPv4-only workload has IPv6 %q", w.IPv6())
	}
}

func TestRouteCoverage(t *testing.T) {
	var learned []netip.Prefix
	for _, s := range []string{"10.244.1.0/26", "fd00:10:244::40/122", "10.244.9.7", "default", "blackhole"} {
		if p, ok := parseRouteDst(s); ok {
			learned = append(learned, p)
		}
	}
	if len(learned) != 3 {
		t.Fatalf("parsed %v", learned)
	}
	for s, want := range map[string]bool{"10.244.1.5": true, "fd00:10:244::7f": true, "fd00:10:244::80": false, "10.244.9.7": true, "10.244.9.8": false} {
		if got := coveredBy(netip.MustParseAddr(s), learned); got != want {
			t.Errorf("%s covered = %v, want %v", s, got, want)
		}
	}
}

// TestDualStackFabricWithoutAgents builds a dual-stack lab without agents
// and checks the IPv6 side of the fabric for real: addresses, default
// routes, reachability, link-local addresses usable at once, the IPv6
// pool, the tor6 peer and BIRD's IPv6 sessions.
func TestDualStackFabricWithoutAgents(t *testing.T) {
	requireRoot(t, "bird", "birdc")
	l := upTest(t, Options{Hosts: 2, Peer: PeerBird, IPv6: true, SkipAgents: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	h2, err := l.Host("host2")
	if err != nil || h2.IPv6 != HostIPv6(2) {
		t.Fatalf("host2: %+v %v", h2, err)
	}
	for _, c := range []struct{ from, to string }{
		{"host1", HostIPv6(2)}, {"host2", HostIPv6(1)}, {"host1", TorIPv6}, {"host2", FabricGateway6}, {"host1", HostIP(2)},
	} {
		if err := l.Ping(c.from, c.to); err != nil {
			t.Errorf("%s -> %s: %v", c.from, c.to, err)
		}
	}
	if out, err := l.Exec("host1", "ip", "-6", "route", "show", "default"); err != nil || !strings.Contains(out, "via "+FabricGateway6) {
		t.Errorf("host1 IPv6 default route = %q (%v), want via %s", out, err, FabricGateway6)
	}
	// A tentative link-local address would hold back the neighbour
	// solicitations of forwarded packets.
	if out, err := l.Exec("host1", "ip", "-6", "addr", "show", "dev", "eth0", "tentative"); err != nil || out != "" {
		t.Errorf("host1 eth0 has tentative addresses: %q (%v)", out, err)
	}
	if eps := l.Endpoints6(true); len(eps) != 2 || eps[1] != (Endpoint{"host2", HostIPv6(2)}) {
		t.Errorf("Endpoints6 = %v", eps)
	}

	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	if pool, err := ds.Get(ctx, datastore.KindIPPool, "lab-pool6"); err != nil || pool.(*datastore.IPPool).Spec.CIDR != DefaultPool6 {
		t.Errorf("IPPool lab-pool6: %+v %v", pool, err)
	}
	if peer, err := ds.Get(ctx, datastore.KindBGPPeer, "tor6"); err != nil || peer.(*datastore.BGPPeer).Spec.PeerIP != TorIPv6 {
		t.Errorf("BGPPeer tor6: %+v %v", peer, err)
	}
	up, err := l.BirdEstablished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"host1", "host1_v6", "host2", "host2_v6"} {
		if _, ok := up[p]; !ok {
			t.Errorf("BIRD has no protocol %s: %v", p, up)
		}
	}
}
