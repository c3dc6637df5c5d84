package lab

// Stand-ins for calyx-agent and the calyx CNI plugin, so that the lab's own
// machinery (detached agents, readiness, restart, libcni calls, workload
// namespaces, ping matrix, down with workloads) is tested for real before
// the real binaries exist. The test binary plays both: TestMain dispatches
// on the name it was started under (symlinks in a temporary bin dir). They
// wire workloads Calico style with real veths, addresses and routes, but do
// no IPAM, BGP or policy: the fake agent routes 10.244.J.0/24 to host J.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/datastore"
)

func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case AgentBinary:
		os.Exit(fakeAgentMain(os.Args[1:]))
	case PluginBinary:
		fakePluginMain()
		return
	}
	os.Exit(m.Run())
}

// fakeBinDir makes a bin dir whose calyx-agent and calyx are this test
// binary.
func fakeBinDir(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{AgentBinary, PluginBinary} {
		if err := os.Symlink(self, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ---- fake agent -------------------------------------------------------------

type fakeAgent struct {
	apipb.UnimplementedAgentServer
	node, ip string
	index    int
	ds       *datastore.Client
	mu       sync.Mutex
	next     int
	started  time.Time
}

func fakeAgentMain(args []string) int {
	fs := flag.NewFlagSet(AgentBinary, flag.ContinueOnError)
	node := fs.String("node-name", "", "")
	nodeIP := fs.String("node-ip", "", "")
	endpoints := fs.String("etcd-endpoints", "", "")
	etcdCA := fs.String("etcd-ca", "", "")
	etcdCert := fs.String("etcd-cert", "", "")
	etcdKey := fs.String("etcd-key", "", "")
	sock := fs.String("agent-socket", "", "")
	fs.String("health-addr", "", "")
	fs.String("metrics-addr", "", "")
	fs.String("log-level", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log.SetPrefix("fake-agent " + *node + ": ")
	idx, err := strconv.Atoi((*nodeIP)[strings.LastIndexByte(*nodeIP, '.')+1:])
	if err != nil || *sock == "" || *endpoints == "" {
		log.Printf("bad flags %v", args)
		return 2
	}
	ds, err := datastore.NewClient(datastore.Config{Endpoints: strings.Split(*endpoints, ","), CAFile: *etcdCA, CertFile: *etcdCert, KeyFile: *etcdKey})
	if err != nil {
		log.Print(err)
		return 1
	}
	a := &fakeAgent{node: *node, ip: *nodeIP, index: idx, ds: ds, started: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	// Register the Node the way an agent that ignores what others wrote
	// would: markReflectors must put the reflector fields back.
	_, err = a.ds.Apply(ctx, &datastore.Node{TypeMeta: typeMeta(datastore.KindNode),
		Metadata: datastore.Metadata{Name: *node}, Spec: datastore.NodeSpec{Address: *nodeIP}})
	cancel()
	if err != nil {
		log.Printf("registering node: %v", err)
		return 1
	}
	for j := 1; j <= 20; j++ {
		if j != idx {
			_ = exec.Command("ip", "route", "replace", fmt.Sprintf("10.244.%d.0/24", j), "via", HostIP(j)).Run()
		}
	}
	_ = os.Remove(*sock)
	_ = os.Remove(*sock + ".fake")
	l, err := net.Listen("unix", *sock)
	if err != nil {
		log.Print(err)
		return 1
	}
	// The lab itself only uses the Agent service; the fake plugin talks to
	// the fake agent over net/rpc on a second socket, so that the fakes do
	// not follow every change of the real CNI service.
	rpcL, err := net.Listen("unix", *sock+".fake")
	if err != nil {
		log.Print(err)
		return 1
	}
	rpcSrv := rpc.NewServer()
	if err := rpcSrv.RegisterName("Fake", &fakeCNI{a}); err != nil {
		log.Print(err)
		return 1
	}
	go rpcSrv.Accept(rpcL)
	srv := grpc.NewServer()
	apipb.RegisterAgentServer(srv, a)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; log.Print("stopping"); rpcL.Close(); srv.Stop() }()
	log.Printf("serving on %s", *sock)
	_ = srv.Serve(l)
	return 0
}

func (a *fakeAgent) NodeStatus(ctx context.Context, _ *apipb.NodeStatusRequest) (*apipb.NodeStatusReply, error) {
	nodes, _, err := a.ds.List(ctx, datastore.KindNode)
	if err != nil {
		return nil, err
	}
	r := &apipb.NodeStatusReply{NodeName: a.node, Ready: true, DatastoreInSync: true, NodeAddress: a.ip, AsNumber: NodeAS, StartedAt: a.started.Unix()}
	for _, n := range nodes {
		if n.GetMeta().Name != a.node {
			r.BgpPeers = append(r.BgpPeers, &apipb.BGPPeerStatus{Address: n.(*datastore.Node).Spec.Address, Name: n.GetMeta().Name,
				Type: apipb.BGPPeerType_BGP_PEER_TYPE_MESH, State: apipb.BGPSessionState_BGP_SESSION_STATE_ESTABLISHED})
		}
	}
	return r, nil
}

func hostVeth(containerID string) string {
	sum := sha256.Sum256([]byte(containerID))
	return "cx" + hex.EncodeToString(sum[:])[:11]
}

func ipRun(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// fakeCNI is the fake plugin's view of the fake agent (net/rpc).
type fakeCNI struct{ a *fakeAgent }

type FakeInvocation struct {
	ContainerID, Netns, IfName, PodName string
	Labels                              map[string]string
}

type FakeResult struct{ IP string }

func (f *fakeCNI) Add(inv FakeInvocation, res *FakeResult) error {
	a := f.a
	if inv.Labels["lab-test"] == "" || inv.PodName == "" {
		return fmt.Errorf("fake agent: want the labels capability and K8S_POD_NAME, got labels %v pod %q", inv.Labels, inv.PodName)
	}
	a.mu.Lock()
	a.next++
	ip := fmt.Sprintf("10.244.%d.%d", a.index, a.next)
	a.mu.Unlock()
	veth, ns := hostVeth(inv.ContainerID), filepath.Base(inv.Netns)
	steps := [][]string{
		{"link", "add", veth, "type", "veth", "peer", "name", inv.IfName, "netns", ns},
		{"link", "set", veth, "up"},
		{"route", "replace", ip + "/32", "dev", veth, "scope", "link"},
		{"-n", ns, "addr", "add", ip + "/32", "dev", inv.IfName},
		{"-n", ns, "link", "set", inv.IfName, "up"},
		{"-n", ns, "route", "add", "169.254.1.1", "dev", inv.IfName, "scope", "link"},
		{"-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", inv.IfName},
	}
	for _, s := range steps {
		if err := ipRun(s...); err != nil {
			return err
		}
	}
	for path, v := range map[string]string{
		"/proc/sys/net/ipv4/conf/" + veth + "/proxy_arp":    "1",
		"/proc/sys/net/ipv4/neigh/" + veth + "/proxy_delay": "0",
	} {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			return err
		}
	}
	res.IP = ip
	return nil
}

func (f *fakeCNI) Del(inv FakeInvocation, _ *FakeResult) error {
	_ = ipRun("link", "del", hostVeth(inv.ContainerID))
	return nil
}

// ---- fake plugin ------------------------------------------------------------

type fakeConf struct {
	cnitypes.PluginConf
	AgentSocket   string `json:"agentSocket"`
	RuntimeConfig struct {
		Labels map[string]string `json:"labels"`
	} `json:"runtimeConfig"`
}

func fakePluginMain() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: fakeCNIAdd, Del: fakeCNIDel, Check: func(*skel.CmdArgs) error { return nil }},
		version.All, "fake calyx plugin for the lab's tests")
}

func fakeCall(args *skel.CmdArgs, method string) (*fakeConf, FakeResult, error) {
	var conf fakeConf
	var res FakeResult
	if err := json.Unmarshal(args.StdinData, &conf); err != nil {
		return nil, res, err
	}
	c, err := rpc.Dial("unix", conf.AgentSocket+".fake")
	if err != nil {
		return nil, res, cnitypes.NewError(cnitypes.ErrTryAgainLater, "agent unreachable", err.Error())
	}
	defer c.Close()
	inv := FakeInvocation{ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName, Labels: conf.RuntimeConfig.Labels}
	for _, kv := range strings.Split(args.Args, ";") {
		if v, ok := strings.CutPrefix(kv, "K8S_POD_NAME="); ok {
			inv.PodName = v
		}
	}
	return &conf, res, c.Call("Fake."+method, inv, &res)
}

func fakeCNIAdd(args *skel.CmdArgs) error {
	conf, r, err := fakeCall(args, "Add")
	if err != nil {
		return err
	}
	res := &current.Result{CNIVersion: conf.CNIVersion,
		Interfaces: []*current.Interface{{Name: args.IfName, Sandbox: args.Netns}}}
	_, n, _ := net.ParseCIDR(r.IP + "/32")
	res.IPs = append(res.IPs, &current.IPConfig{Address: *n, Gateway: net.ParseIP("169.254.1.1"), Interface: current.Int(0)})
	return cnitypes.PrintResult(res, conf.CNIVersion)
}

func fakeCNIDel(args *skel.CmdArgs) error {
	_, _, err := fakeCall(args, "Del")
	return err
}
