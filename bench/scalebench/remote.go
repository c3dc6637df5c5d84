package scalebench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
)

// remotePool holds the fake nodes' addresses (/10: room for 4M).
const remotePool = "10.64.0.0/10"

// remoteLabel is on every fake endpoint; the selecting policy's rule
// names it.
const remoteLabel = "scale-remote"

// remoteCost is one agent's memory and start with many remote endpoints.
type remoteCost struct {
	endpoints, nodes int
	// RSS of the agent, each read after a restart and settle: with no
	// remote endpoint, with them, and with a policy selecting them all.
	base, unselected, selected agentMem
	// inSync is from the agent's start to ready with the endpoints in
	// etcd; list is the peer: the same keys listed and decoded here.
	inSync, list time.Duration
	fill         time.Duration // writing them
	setMembers   int           // the selecting policy's set, in the kernel
}

type agentMem struct {
	rss, heapInuse float64
}

// perEndpoint is the RSS per remote endpoint over the base.
func (r remoteCost) perEndpoint(m agentMem) float64 {
	return (m.rss - r.base.rss) / float64(r.endpoints)
}

// fakeNamespaces is how many namespaces the fake endpoints are spread over.
const fakeNamespaces = 20

func fakeNamespace(i int) string { return "ns-" + strconv.Itoa(i) }

// fakeEndpoint is endpoint j of fake node i, shaped as the agent writes a
// Kubernetes pod's: a 64-hex container ID, the pod's labels and the
// agent's, its namespace's profile, one address.
func fakeEndpoint(i, j, perNode int) *datastore.WorkloadEndpoint {
	node := fmt.Sprintf("scale-node-%04d", i)
	sum := sha256.Sum256([]byte(node + "/" + strconv.Itoa(j)))
	cid := hex.EncodeToString(sum[:])
	ns := fakeNamespace(j % fakeNamespaces)
	pod := fmt.Sprintf("app-%d-%s-%s", j%50, cid[:10], cid[10:15])
	base := netip.MustParsePrefix(remotePool).Addr().As4()
	k := uint32(i*perNode + j)
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3]) + k
	addr := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	r, _ := datastore.NewResource(datastore.KindWorkloadEndpoint)
	w := r.(*datastore.WorkloadEndpoint)
	w.Metadata.Name = datastore.WorkloadEndpointName(node, cid, "eth0")
	w.Metadata.Labels = map[string]string{
		"app": fmt.Sprintf("app-%d", j%50), "pod-template-hash": cid[:10],
		datastore.LabelNode: node, datastore.LabelNamespace: ns, datastore.LabelPod: pod,
		datastore.LabelOrchestrator: "k8s", datastore.LabelServiceAccount: "default",
		remoteLabel: "yes",
	}
	w.Spec = datastore.WorkloadEndpointSpec{
		Node: node, Workload: ns + "/" + pod, ContainerID: cid,
		InterfaceName: "cx" + cid[20:31], ContainerInterface: "eth0",
		IPNetworks: []string{netip.PrefixFrom(addr, 32).String()},
		Profiles:   []string{"kns." + ns},
	}
	return w
}

// measureRemote: host1's agent alone (host2's stopped, so that it does
// not load the machine), restarted for each reading so that each starts
// from a fresh list: without remote endpoints; with them; with a policy
// on host1's workload whose rule selects them all.
func measureRemote(ctx context.Context, l *lab.Lab, sz sizes, settle time.Duration, log *slog.Logger) (r remoteCost, err error) {
	r.endpoints, r.nodes = sz.remoteEndpoints, sz.remoteNodes
	if err := l.StopAgent("host2"); err != nil {
		return r, err
	}
	if r.base, _, err = restartAndRead(ctx, l, settle); err != nil {
		return r, fmt.Errorf("agent without remote endpoints: %w", err)
	}
	log.Info("agent without remote endpoints", "rss_mib", r.base.rss/(1<<20))

	if err := l.StopAgent("host1"); err != nil {
		return r, err
	}
	if r.fill, err = fillRemote(ctx, l, r.endpoints, r.nodes); err != nil {
		return r, err
	}
	log.Info("remote endpoints written", "count", r.endpoints, "nodes", r.nodes, "took", r.fill.Round(time.Millisecond))
	if r.list, err = listAndDecode(ctx, l, r.endpoints); err != nil {
		return r, err
	}
	start := time.Now()
	if err := l.StartAgent(ctx, "host1"); err != nil {
		return r, err
	}
	r.inSync = time.Since(start)
	if r.unselected, err = settleAndRead(ctx, l, settle); err != nil {
		return r, err
	}
	log.Info("agent with remote endpoints", "in_sync", r.inSync.Round(time.Millisecond), "list_and_decode", r.list.Round(time.Millisecond),
		"rss_mib", r.unselected.rss/(1<<20), "per_endpoint", r.perEndpoint(r.unselected))

	policy := fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: Policy
metadata:
  name: scale-from-remote
spec:
  selector: role == "server"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: tcp
    source:
      selector: %s == "yes"
`, remoteLabel)
	if err := l.Apply(ctx, []byte(policy)); err != nil {
		return r, err
	}
	if r.setMembers, err = waitSetMembers(ctx, l, "host1", r.endpoints); err != nil {
		return r, err
	}
	if r.selected, r.setMembers, err = restartAndRead(ctx, l, settle, r.endpoints); err != nil {
		return r, fmt.Errorf("agent with a policy selecting the remote endpoints: %w", err)
	}
	log.Info("agent with the remote endpoints selected", "rss_mib", r.selected.rss/(1<<20), "per_endpoint", r.perEndpoint(r.selected), "set_members", r.setMembers)
	return r, nil
}

// fillRemote writes n endpoints of nodes fake nodes (and their pool), as
// the agents of those nodes would have, many per transaction.
func fillRemote(ctx context.Context, l *lab.Lab, n, nodes int) (time.Duration, error) {
	ds, err := l.Datastore()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	pool, _ := datastore.NewResource(datastore.KindIPPool)
	p := pool.(*datastore.IPPool)
	p.Metadata.Name = "scale-remote"
	p.Spec.CIDR = remotePool
	if err := ds.WriteAll(ctx, []datastore.Resource{p}, datastore.ModeApply); err != nil {
		return 0, fmt.Errorf("the remote nodes' pool: %w", err)
	}
	// Their namespaces' Profiles, as calyx-kube-controllers writes them:
	// what selectors see of an endpoint is its labels and its profile's.
	var batch []datastore.Resource
	for i := range fakeNamespaces {
		r, _ := datastore.NewResource(datastore.KindProfile)
		pr := r.(*datastore.Profile)
		pr.Metadata.Name = "kns." + fakeNamespace(i)
		pr.Spec.LabelsToApply = map[string]string{datastore.NamespaceLabelPrefix + "kubernetes.io/metadata.name": fakeNamespace(i)}
		batch = append(batch, pr)
	}
	if err := ds.WriteAll(ctx, batch, datastore.ModeApply); err != nil {
		return 0, fmt.Errorf("the remote endpoints' profiles: %w", err)
	}
	batch = batch[:0]
	perNode := (n + nodes - 1) / nodes
	flush := func() error {
		err := ds.WriteAll(ctx, batch, datastore.ModeApply)
		batch = batch[:0]
		return err
	}
	for k := range n {
		batch = append(batch, fakeEndpoint(k/perNode, k%perNode, perNode))
		if len(batch) == 4096 {
			if err := flush(); err != nil {
				return 0, fmt.Errorf("writing remote endpoints: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return 0, fmt.Errorf("writing remote endpoints: %w", err)
	}
	return time.Since(start), nil
}

// listAndDecode is the floor of an agent's start: the endpoints read from
// etcd in one range and decoded, here (through the fabric, as the agent).
func listAndDecode(ctx context.Context, l *lab.Lab, want int) (time.Duration, error) {
	ds, err := l.Datastore()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := ds.Etcd().Get(ctx, datastore.KindPrefix(datastore.KindWorkloadEndpoint), clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, kv := range resp.Kvs {
		if _, err := datastore.Decode(datastore.KindWorkloadEndpoint, kv.Value); err != nil {
			return 0, fmt.Errorf("decoding %s: %w", kv.Key, err)
		}
		n++
	}
	took := time.Since(start)
	if n < want {
		return 0, fmt.Errorf("listed %d endpoints, want at least %d", n, want)
	}
	return took, nil
}

// restartAndRead restarts host1's agent and reads its memory once it has
// settled; with setMembers, it first waits for the policy's set to be in
// the kernel again.
func restartAndRead(ctx context.Context, l *lab.Lab, settle time.Duration, setMembers ...int) (agentMem, int, error) {
	if err := l.RestartAgent(ctx, "host1"); err != nil {
		return agentMem{}, 0, err
	}
	members := 0
	if len(setMembers) > 0 {
		var err error
		if members, err = waitSetMembers(ctx, l, "host1", setMembers[0]); err != nil {
			return agentMem{}, 0, err
		}
	}
	m, err := settleAndRead(ctx, l, settle)
	return m, members, err
}

// settleAndRead leaves host1's agent alone for settle, then reads its RSS
// and its Go heap in use.
func settleAndRead(ctx context.Context, l *lab.Lab, settle time.Duration) (agentMem, error) {
	if err := sleep(ctx, settle); err != nil {
		return agentMem{}, err
	}
	var pid int
	for _, p := range l.Processes() {
		if p.Name == "agent-host1" && p.Alive() {
			pid = p.PID
		}
	}
	if pid == 0 {
		return agentMem{}, fmt.Errorf("the agent of host1 does not run")
	}
	rss, err := rssBytes(pid)
	if err != nil {
		return agentMem{}, err
	}
	s, err := scrape(ctx, l, "host1", "127.0.0.1:9091")
	if err != nil {
		return agentMem{}, err
	}
	return agentMem{rss: rss, heapInuse: s.sum("go_memstats_heap_inuse_bytes")}, nil
}

// waitSetMembers waits until one of host's ipsets holds at least want
// members and returns the largest count.
func waitSetMembers(ctx context.Context, l *lab.Lab, host string, want int) (int, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := l.ExecContext(ctx, host, "ipset", "list", "-t")
		if err != nil {
			return 0, err
		}
		most := 0
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "Number of entries: "); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					most = max(most, n)
				}
			}
		}
		if most >= want {
			return most, nil
		}
		if time.Now().After(deadline) {
			return most, fmt.Errorf("%s: the largest ipset has %d members after 60 s, want %d (the selecting policy's set)", host, most, want)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return 0, err
		}
	}
}
