package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/calyx-net/calyx/datastore"
)

func TestPrefixIsStableShortAndDistinct(t *testing.T) {
	a, b := Prefix("/run/calyx-lab/demo"), Prefix("/run/calyx-lab/default")
	if a == b {
		t.Errorf("two directories share the prefix %s", a)
	}
	if a != Prefix("/run/calyx-lab/../calyx-lab/demo") {
		t.Error("the prefix depends on how the path is spelt")
	}
	// The longest namespace name of a lab must stay readable; interface
	// names are never derived from it.
	if len(a) != 10 || !strings.HasPrefix(a, "cxl") || !strings.HasSuffix(a, "-") {
		t.Errorf("prefix %q: want cxl + 6 hex + -", a)
	}
}

func TestWorkloadNames(t *testing.T) {
	for _, ok := range []string{"web", "h1-w1", "a", strings.Repeat("x", 40)} {
		if err := validateWorkloadName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Web", "-a", "a-", "a_b", "host1", "etcd", "etcd2", "tor", "fabric", strings.Repeat("x", 41), "a/b"} {
		if err := validateWorkloadName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestClusterResourcesValidate(t *testing.T) {
	for _, o := range []Options{
		{Hosts: 3, Pool: DefaultPool},
		{Hosts: 4, Reflectors: 2, Peer: PeerBird, Pool: "10.10.0.0/16"},
	} {
		rs := ClusterResources(o)
		for _, r := range rs {
			if err := datastore.Validate(r); err != nil {
				t.Errorf("%s: %v", datastore.Describe(r), err)
			}
		}
		var mesh *bool
		nodes, peers := 0, 0
		for _, r := range rs {
			switch r := r.(type) {
			case *datastore.BGPConfig:
				mesh = r.Spec.NodeToNodeMesh
			case *datastore.Node:
				nodes++
				if r.Spec.RouteReflectorClusterID == "" {
					t.Errorf("reflector node %s without a cluster ID", r.Metadata.Name)
				}
			case *datastore.BGPPeer:
				peers++
			}
		}
		if mesh == nil || *mesh != (o.Reflectors == 0) {
			t.Errorf("%+v: mesh = %v", o, mesh)
		}
		if nodes != o.Reflectors || peers != map[bool]int{true: 1, false: 0}[o.Peer == PeerBird] {
			t.Errorf("%+v: %d reflector nodes, %d peers", o, nodes, peers)
		}
	}
}

func TestExpectedPeers(t *testing.T) {
	cases := []struct {
		o    Options
		host int
		want int
	}{
		{Options{Hosts: 3}, 1, 2},
		{Options{Hosts: 3, Peer: PeerBird}, 2, 3},
		{Options{Hosts: 5, Reflectors: 2}, 1, 4}, // a reflector: every other host
		{Options{Hosts: 5, Reflectors: 2}, 4, 2}, // a client: the reflectors
		{Options{Hosts: 5, Reflectors: 2, Peer: PeerBird}, 5, 3},
	}
	for _, c := range cases {
		if got := expectedPeers(c.o, c.host); got != c.want {
			t.Errorf("expectedPeers(%+v, host%d) = %d, want %d", c.o, c.host, got, c.want)
		}
	}
}

func TestBirdConfigParses(t *testing.T) {
	cfg := birdConfig(3, false)
	for _, want := range []string{"router id " + TorIP, "neighbor " + HostIP(3) + " as 64512", "local " + TorIP + " as 65000", TorStaticRoute} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
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

func TestParseBirdProtocols(t *testing.T) {
	out := `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     08:40:09.333
kernel1    Kernel     master4    up     08:40:09.333
static1    Static     master4    up     08:40:09.333
host1      BGP        ---        up     08:40:10.101  Established
host2      BGP        ---        start  08:40:09.333  Active        Socket: Connection refused`
	got := parseBirdProtocols(out)
	if len(got) != 2 || !got["host1"] || got["host2"] {
		t.Errorf("parseBirdProtocols = %v", got)
	}
}

func TestConflistIsWhatLibcniReads(t *testing.T) {
	h := Host{Name: "host1", AgentSocket: "/run/calyx-lab/x/host1/agent.sock"}
	list, err := libcni.ConfListFromBytes(Conflist(h))
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != CNINetworkName || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 {
		t.Fatalf("conflist: %+v", list)
	}
	p := list.Plugins[0]
	if p.Network.Type != "calyx" || !p.Network.Capabilities["labels"] || !strings.Contains(string(p.Bytes), `"agentSocket":"`+h.AgentSocket+`"`) {
		t.Errorf("plugin conf: %+v %s", p.Network, p.Bytes)
	}
	rt := cniRuntime(Workload{Name: "web", Netns: "cxl000000-w-web", ContainerID: "cxl000000-web", Labels: map[string]string{"app": "web"}})
	if rt.NetNS != "/run/netns/cxl000000-w-web" || rt.IfName != "eth0" || rt.CapabilityArgs["labels"].(map[string]any)["app"] != "web" {
		t.Errorf("runtime conf: %+v", rt)
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadState(dir); err == nil {
		t.Fatal("loadState of an empty dir succeeded")
	}
	st := &State{Version: stateVersion, Prefix: Prefix(dir), Created: time.Now().UTC().Round(time.Second)}
	st.setProc(Proc{Name: "etcd", PID: 42})
	st.setProc(Proc{Name: "etcd", PID: 43})
	st.Workloads = append(st.Workloads, Workload{Name: "w", IPs: []string{"10.244.0.1"}})
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := got.proc("etcd"); p == nil || p.PID != 43 || len(got.Processes) != 1 {
		t.Errorf("processes: %+v", got.Processes)
	}
	if w, _ := got.workload("w"); w == nil || w.IP() != "10.244.0.1" {
		t.Errorf("workloads: %+v", got.Workloads)
	}
}

func TestProcAliveChecksStartTime(t *testing.T) {
	self := Proc{PID: os.Getpid()}
	self.StartTicks, _ = procStartTicks(self.PID)
	if !self.alive() {
		t.Fatal("this process is not alive")
	}
	reused := self
	reused.StartTicks++
	if reused.alive() {
		t.Error("a process with another start time counts as alive: a reused PID could be killed")
	}
}

func TestMatrixString(t *testing.T) {
	eps := []Endpoint{{"a", "10.0.0.1"}, {"bb", "10.0.0.2"}}
	m := Matrix{Sources: eps, Targets: eps, Results: [][]PingResult{
		{{}, {OK: true, RTT: 1500 * time.Microsecond}},
		{{From: "bb", To: "a"}, {}},
	}}
	s := m.String()
	for _, want := range []string{"✓ 1.50", "✗", "1 of 2 pairs answered"} {
		if !strings.Contains(s, want) {
			t.Errorf("matrix lacks %q:\n%s", want, s)
		}
	}
	if f := m.Failed(); len(f) != 1 || f[0].From != "bb" {
		t.Errorf("Failed() = %+v", f)
	}
}
