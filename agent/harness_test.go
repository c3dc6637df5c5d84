package agent_test

// The harness of the agent's integration tests: it builds the real
// binaries once, and gives each test its own "host" network namespace
// (with a "fabric" namespace behind it holding the default route, which
// proxy-ARP needs), a calyx-agent with embedded etcd running in it, and
// workload namespaces driven through the real calyx CNI binary.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/client"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/routes/netns"
	"github.com/calyx-net/calyx/routes/veth"
)

// binDir holds calyx-agent, calyx, calyxctl and testagent (the agent with
// test hooks) built by TestMain; empty
// when the integration tests cannot run here (not root, or -short).
var binDir string

const (
	nodeName = "h1"
	nodeIP   = "198.18.0.1"
	fabricIP = "198.18.0.254"
	poolCIDR = "10.244.0.0/16"
	// resync is the agent's --resync-interval in these tests: short, so
	// that drift without a kernel event (a sysctl) is repaired quickly.
	resync = 2 * time.Second
)

func TestMain(m *testing.M) {
	flag.Parse()
	// A fuzz run (make fuzz-quick) runs no integration test: skip the build.
	fuzzing := flag.Lookup("test.fuzz") != nil && flag.Lookup("test.fuzz").Value.String() != ""
	if os.Geteuid() == 0 && !testing.Short() && !fuzzing {
		dir, err := os.MkdirTemp("", "calyx-agent-itest-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, "agent tests:", err)
			os.Exit(1)
		}
		cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
			"./cmd/calyx-agent", "./cmd/calyx", "./cmd/calyxctl", "./agent/internal/testagent")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "agent tests: building the binaries: %v\n%s", err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		binDir = dir
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// requireRoot skips integration tests where they cannot run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration test: needs root (network namespaces)")
	}
	if binDir == "" {
		t.Skip("integration test: skipped with -short")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("integration test: iproute2 (ip) is missing")
	}
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// run runs a command and returns its combined output, failing the test on
// error.
func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := runErr(argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

func runErr(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// host is one emulated node as seen from one (sub)test: the test that
// failures are reported to, and the node itself.
type host struct {
	t *testing.T
	*node
}

// node is the emulated node: its namespace, the fabric behind it, its agent.
type node struct {
	prefix string // unique name prefix of everything this host creates
	dir    string
	ns     string // host namespace name
	fabric string
	socket string
	conf   []byte // a single-plugin network config for the calyx binary

	agentMu  sync.Mutex
	agent    *exec.Cmd
	agentLog *os.File
	agentEnv []string
	hooks    []string // testagent's --test-* flags; none: the real calyx-agent
	exited   chan struct{}

	etcdOnce sync.Once
	etcd     *clientv3.Client
	etcdErr  error
}

// in returns the same host reporting to subtest t (whose cleanups then
// remove what the subtest creates).
func (h *host) in(t *testing.T) *host { return &host{t: t, node: h.node} }

// hostOptions says how to start a host's agent.
type hostOptions struct {
	env []string // extra environment, e.g. NOTIFY_SOCKET=...
	// hooks run testagent with these flags instead of calyx-agent, e.g.
	// --test-fault-after veth-created.
	hooks  []string
	noPool bool // do not create the IPPool
}

// newHost builds the namespaces, starts the agent and (unless told not
// to) creates the pool and waits until CNI STATUS says ready. Everything is
// removed in t.Cleanup, whatever the outcome.
func newHost(t *testing.T, o hostOptions) *host {
	t.Helper()
	requireRoot(t)
	prefix := "cxt" + randomHex(5)
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, node: &node{prefix: prefix, dir: dir, ns: prefix + "-h", fabric: prefix + "-f",
		socket: filepath.Join(dir, "agent.sock"), agentEnv: o.env, hooks: o.hooks}}
	h.conf = []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":%q}`, h.socket))
	t.Cleanup(h.close)

	run(t, "ip", "netns", "add", h.ns)
	run(t, "ip", "netns", "add", h.fabric)
	run(t, "ip", "link", "add", "fab0", "netns", h.ns, "type", "veth", "peer", "name", "hst0", "netns", h.fabric)
	run(t, "ip", "-n", h.ns, "addr", "add", nodeIP+"/24", "dev", "fab0")
	run(t, "ip", "-n", h.ns, "link", "set", "fab0", "up")
	run(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", h.fabric, "addr", "add", fabricIP+"/24", "dev", "hst0")
	run(t, "ip", "-n", h.fabric, "link", "set", "hst0", "up")
	// Proxy-ARP for 169.254.1.1 answers only when the host has a route
	// covering it through another interface.
	run(t, "ip", "-n", h.ns, "route", "add", "default", "via", fabricIP)

	h.startAgent()
	h.waitInSync()
	if !o.noPool {
		h.applyPool()
		h.waitStatusReady()
	}
	return h
}

func (h *host) nsPath() string { return "/run/netns/" + h.ns }

// close stops the agent and removes the namespaces and files. It runs in
// t.Cleanup even when the test failed; it dumps the agent's log then.
func (h *host) close() {
	h.stopAgent(syscall.SIGTERM)
	if h.t.Failed() {
		h.dumpLog()
	}
	if h.etcd != nil {
		h.etcd.Close()
	}
	for _, ns := range []string{h.ns, h.fabric} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			if out, err := runErr("ip", "netns", "del", ns); err != nil {
				h.t.Logf("removing namespace %s: %v %s", ns, err, out)
			}
		}
	}
	os.RemoveAll(h.dir)
}

func (h *host) dumpLog() {
	data, err := os.ReadFile(filepath.Join(h.dir, "agent.log"))
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	h.t.Logf("last lines of the agent log (%s):\n%s", h.ns, strings.Join(lines, "\n"))
}

// startAgent starts calyx-agent inside the host namespace.
func (h *host) startAgent() {
	h.t.Helper()
	h.agentMu.Lock()
	defer h.agentMu.Unlock()
	if h.agent != nil {
		h.t.Fatal("agent already running")
	}
	logf, err := os.OpenFile(filepath.Join(h.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	// ip netns exec execs the agent in place: the child's pid is the agent's.
	argv := []string{"netns", "exec", h.ns, filepath.Join(binDir, "calyx-agent")}
	if len(h.hooks) > 0 {
		argv = append([]string{"netns", "exec", h.ns, filepath.Join(binDir, "testagent")}, h.hooks...)
	}
	argv = append(argv, "--node-name", nodeName, "--node-ip", nodeIP,
		"--embedded-etcd", filepath.Join(h.dir, "etcd"), "--agent-socket", h.socket,
		"--log-level", "debug", "--resync-interval", resync.String())
	cmd := exec.Command("ip", argv...)
	cmd.Env = append(cleanEnv(), h.agentEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		h.t.Fatalf("starting calyx-agent: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	h.agent, h.agentLog, h.exited = cmd, logf, exited
}

// cleanEnv is the test's environment without CALYX_* settings (and
// without systemd's notify socket, should the tests run under systemd),
// so that the agent and plugin see only what each test gives them.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CALYX_") && !strings.HasPrefix(kv, "CNI_") && !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "WATCHDOG_") {
			out = append(out, kv)
		}
	}
	return out
}

// stopAgent signals the agent and waits for it to exit (SIGKILL after
// 15 s). It returns the exit status; -1 if no agent ran.
func (h *host) stopAgent(sig syscall.Signal) int {
	h.agentMu.Lock()
	defer h.agentMu.Unlock()
	if h.agent == nil {
		return -1
	}
	h.agent.Process.Signal(sig)
	select {
	case <-h.exited:
	case <-time.After(15 * time.Second):
		h.t.Errorf("calyx-agent did not stop within 15s of %v; killing it", sig)
		h.agent.Process.Kill()
		<-h.exited
	}
	code := h.agent.ProcessState.ExitCode()
	h.agentLog.Close()
	h.agent = nil
	return code
}

// agentDial connects to the agent's API.
func (h *host) agentDial(ctx context.Context) (*grpc.ClientConn, error) {
	return client.Dial(ctx, h.socket, 2*time.Second)
}

// waitInSync waits until the agent answers and its datastore is in sync.
func (h *host) waitInSync() {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-h.exited:
			h.t.Fatalf("calyx-agent exited during start-up (see its log below)")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := h.agentDial(ctx)
		if err == nil {
			var st *apipb.NodeStatusReply
			st, err = apipb.NewAgentClient(conn).NodeStatus(ctx, &apipb.NodeStatusRequest{})
			conn.Close()
			if err == nil && st.DatastoreInSync {
				cancel()
				return
			}
			if err == nil {
				err = errors.New("datastore not in sync yet")
			}
		}
		cancel()
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("calyx-agent in %s not in sync within 30s: %v", h.ns, last)
}

// calyxctl runs calyxctl inside the host namespace (the embedded etcd
// listens on its loopback).
func (h *host) calyxctl(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{"netns", "exec", h.ns, filepath.Join(binDir, "calyxctl")}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = cleanEnv()
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (h *host) applyPool() {
	h.t.Helper()
	pool := fmt.Sprintf("apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: pool1}\nspec: {cidr: %s}\n", poolCIDR)
	if out, err := h.calyxctl(pool, "apply", "-f", "-"); err != nil {
		h.t.Fatalf("calyxctl apply pool: %v\n%s", err, out)
	}
}

// waitStatusReady polls CNI STATUS through the binary until it succeeds.
func (h *host) waitStatusReady() {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last cniOutcome
	for time.Now().Before(deadline) {
		last = h.cni("STATUS", nil, nil)
		if last.err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("CNI STATUS not ready within 15s: %v", last.err)
}

// etcdClient is an etcd client whose connections start inside the host
// namespace, where the embedded etcd listens on 127.0.0.1:2379.
func (h *host) etcdClient() *clientv3.Client {
	h.t.Helper()
	h.etcdOnce.Do(func() {
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			if _, rest, ok := strings.Cut(addr, "://"); ok {
				addr = rest
			}
			return h.dialInNS(ctx, "tcp", addr)
		}
		h.etcd, h.etcdErr = clientv3.New(clientv3.Config{
			Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: 5 * time.Second,
			DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}, Logger: zap.NewNop(),
		})
	})
	if h.etcdErr != nil {
		h.t.Fatalf("etcd client in %s: %v", h.ns, h.etcdErr)
	}
	return h.etcd
}

// dialInNS connects from inside the host namespace (to what listens on
// its loopback: the embedded etcd, the health endpoint).
func (h *host) dialInNS(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := netns.Do(h.nsPath(), func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// workload is one attachment: a namespace and what the agent derives.
type workload struct {
	name        string // namespace name
	containerID string
	ifName      string
	endpoint    string // WorkloadEndpoint name
	hostIf      string
	handle      string
	sharedWith  []string      // links of other attachments in the same namespace
	ip          netip.Addr    // set by a successful ADD
	result      []byte        // ADD's stdout
	addTook     time.Duration // ADD as seen from the binary
}

func (w *workload) nsPath() string { return "/run/netns/" + w.name }

// newWorkload creates a workload namespace (removed in t.Cleanup) with a
// random 64-hex container ID, as runtimes make them, and ifname eth0.
func (h *host) newWorkload(suffix string) *workload {
	h.t.Helper()
	return h.newWorkloadWith(suffix, randomHex(64), "eth0")
}

// newWorkloadWith creates a workload namespace for an attachment with the
// given container ID and ifname.
func (h *host) newWorkloadWith(suffix, containerID, ifName string) *workload {
	h.t.Helper()
	w := h.workloadNamed(suffix, containerID, ifName)
	run(h.t, "ip", "netns", "add", w.name)
	run(h.t, "ip", "-n", w.name, "link", "set", "lo", "up")
	h.t.Cleanup(func() {
		if _, err := os.Stat(w.nsPath()); err == nil {
			runErr("ip", "netns", "del", w.name)
		}
	})
	return w
}

// workloadNamed describes an attachment without creating its namespace.
func (h *host) workloadNamed(suffix, containerID, ifName string) *workload {
	ep := datastore.WorkloadEndpointName(nodeName, containerID, ifName)
	return &workload{
		name: h.prefix + "-w" + suffix, containerID: containerID, ifName: ifName,
		endpoint: ep, hostIf: veth.HostInterfaceName(ep), handle: ipam.AttachmentHandle(nodeName, containerID, ifName),
	}
}

// cniOutcome is what one run of the calyx binary produced.
type cniOutcome struct {
	stdout, stderr string
	took           time.Duration
	err            error        // non-nil when the binary failed
	cniErr         *types.Error // the printed CNI error, when it printed one
}

// cni runs the calyx binary with the CNI_* environment as the spec says,
// for workload w (nil for STATUS), with conf as stdin (h.conf when nil).
func (h *host) cni(command string, w *workload, conf []byte, extraEnv ...string) cniOutcome {
	if conf == nil {
		conf = h.conf
	}
	env := append(cleanEnv(), "CNI_COMMAND="+command, "CNI_PATH="+binDir)
	if w != nil {
		env = append(env, "CNI_CONTAINERID="+w.containerID, "CNI_NETNS="+w.nsPath(), "CNI_IFNAME="+w.ifName)
	}
	env = append(env, extraEnv...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "calyx"))
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	o := cniOutcome{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start), err: err}
	if err != nil {
		var ce types.Error
		if json.Unmarshal(stdout.Bytes(), &ce) == nil && ce.Code != 0 {
			o.cniErr = &ce
		}
		o.err = fmt.Errorf("calyx %s: %v: stdout %q stderr %q", command, err, o.stdout, o.stderr)
	}
	return o
}

// add runs ADD for w and records its address; it fails the test on error.
func (h *host) add(w *workload) {
	h.t.Helper()
	o := h.cni("ADD", w, nil)
	if o.err != nil {
		h.t.Fatal(o.err)
	}
	w.ip = resultIP(h.t, []byte(o.stdout))
	w.result, w.addTook = []byte(o.stdout), o.took
}

// resultIP is the single IPv4 address of an ADD result.
func resultIP(t *testing.T, out []byte) netip.Addr {
	t.Helper()
	var res current.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ADD result %q: %v", out, err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("ADD result has %d addresses, want 1: %s", len(res.IPs), out)
	}
	a, ok := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if !ok || res.IPs[0].Address.Mask.String() != "ffffffff" {
		t.Fatalf("ADD result address %v is not an IPv4 /32", res.IPs[0].Address)
	}
	return a
}

// checkConf is the network config with prevResult, for CHECK (and DEL).
func (h *host) checkConf(prev []byte) []byte {
	var conf map[string]any
	if err := json.Unmarshal(h.conf, &conf); err != nil {
		h.t.Fatal(err)
	}
	conf["prevResult"] = json.RawMessage(prev)
	out, err := json.Marshal(conf)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// pingFrom pings addr from namespace ns: up to 3 tries of one echo each.
func pingFrom(ns string, addr netip.Addr) error {
	var err error
	var out string
	for i := 0; i < 3; i++ {
		if out, err = runErr("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", "-q", addr.String()); err == nil {
			return nil
		}
	}
	return fmt.Errorf("ping %s from %s: %v\n%s", addr, ns, err, out)
}
