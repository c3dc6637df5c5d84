package agent_test

// Integration tests of workload networking: the real calyx-agent (embedded
// etcd) in a host namespace, the real calyx CNI binary, real veths, routes,
// sysctls and iptables. They need root; see harness_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/testutil"
	"github.com/calyx-net/calyx/routes"
)

// TestWorkloadLifecycleCNIEnv drives the binary with the CNI_* environment
// as the spec says: ADD, ping both ways, CHECK, DEL, nothing left.
func TestWorkloadLifecycleCNIEnv(t *testing.T) {
	h := newHost(t, hostOptions{})
	w := h.newWorkload("w1")

	h.add(w)
	t.Logf("ADD took %v (seen from the binary), address %s", w.addTook, w.ip)
	if !netip.MustParsePrefix(poolCIDR).Contains(w.ip) {
		t.Fatalf("address %s is not from the pool %s", w.ip, poolCIDR)
	}
	var res current.Result
	if err := json.Unmarshal(w.result, &res); err != nil {
		t.Fatal(err)
	}
	if res.CNIVersion != "1.1.0" || len(res.Routes) != 1 || res.Routes[0].GW.String() != "169.254.1.1" {
		t.Errorf("ADD result: want cniVersion 1.1.0 and a default route via 169.254.1.1, got %s", w.result)
	}
	checkWired(t, h, w)
	if err := pingFrom(h.ns, w.ip); err != nil {
		t.Fatalf("host to workload: %v", err)
	}
	if err := pingFrom(w.name, netip.MustParseAddr(nodeIP)); err != nil {
		t.Fatalf("workload to host: %v", err)
	}
	wep := h.getEndpoint(w)
	if wep == nil {
		t.Fatalf("no WorkloadEndpoint %s after ADD", w.endpoint)
	}
	if wep.Spec.Node != nodeName || wep.Spec.InterfaceName != w.hostIf || !slices.Equal(wep.Spec.IPNetworks, []string{w.ip.String() + "/32"}) {
		t.Errorf("WorkloadEndpoint spec = %+v; want node %s, interface %s, ipNetworks [%s/32]", wep.Spec, nodeName, w.hostIf, w.ip)
	}
	if wep.Metadata.Labels[datastore.LabelNode] != nodeName {
		t.Errorf("WorkloadEndpoint labels %v lack %s=%s", wep.Metadata.Labels, datastore.LabelNode, nodeName)
	}
	if held := h.ipamHolds(w); len(held) != 2 {
		t.Errorf("IPAM after ADD: want the handle key and one allocation, got %v", held)
	}

	if o := h.cni("CHECK", w, h.checkConf(w.result)); o.err != nil {
		t.Fatalf("CHECK of a working workload: %v", o.err)
	}
	// CHECK must notice a prevResult that is not the workload's.
	bad := strings.Replace(string(w.result), w.ip.String()+"/32", "10.244.255.254/32", 1)
	if o := h.cni("CHECK", w, h.checkConf([]byte(bad))); o.err == nil {
		t.Errorf("CHECK with a foreign prevResult address succeeded")
	}

	delO := h.cni("DEL", w, nil)
	if delO.err != nil {
		t.Fatalf("DEL: %v", delO.err)
	}
	t.Logf("DEL took %v", delO.took)
	h.waitNoLeftovers(w, 5*time.Second)
	// DEL is idempotent.
	if o := h.cni("DEL", w, nil); o.err != nil {
		t.Fatalf("second DEL: %v", o.err)
	}
	// CHECK of a deleted workload fails.
	if o := h.cni("CHECK", w, h.checkConf(w.result)); o.err == nil {
		t.Errorf("CHECK after DEL succeeded")
	}
}

// TestWorkloadLifecycleLibcni drives the binary as containerd does:
// libcni with a conflist, the labels capability and K8S_POD_* args.
func TestWorkloadLifecycleLibcni(t *testing.T) {
	h := newHost(t, hostOptions{})
	w := h.newWorkload("pod")
	conflist := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"calyx","plugins":[{"type":"calyx","agentSocket":%q,"mtu":1400,"capabilities":{"labels":true}}]}`, h.socket)
	list, err := libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: w.containerID, NetNS: w.nsPath(), IfName: "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", "web-0"}, {"K8S_POD_INFRA_CONTAINER_ID", w.containerID}},
		CapabilityArgs: map[string]any{"labels": map[string]string{"app": "web", "tier": "front"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if err := cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS through libcni: %v", err)
	}
	start := time.Now()
	r, err := cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD through libcni: %v", err)
	}
	t.Logf("libcni ADD took %v", time.Since(start))
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(res)
	w.ip = resultIP(t, raw)
	checkWired(t, h, w)
	if err := pingFrom(h.ns, w.ip); err != nil {
		t.Fatalf("host to workload: %v", err)
	}
	if err := pingFrom(w.name, netip.MustParseAddr(nodeIP)); err != nil {
		t.Fatalf("workload to host: %v", err)
	}
	if mtu := linkMTU(t, w.nsPath(), "eth0"); mtu != 1400 {
		t.Errorf("workload eth0 MTU = %d, want 1400 from the conflist", mtu)
	}

	wep := h.getEndpoint(w)
	if wep == nil {
		t.Fatalf("no WorkloadEndpoint %s after ADD", w.endpoint)
	}
	want := map[string]string{
		"app": "web", "tier": "front",
		datastore.LabelNode: nodeName, datastore.LabelNamespace: "shop", datastore.LabelPod: "web-0",
	}
	for k, v := range want {
		if wep.Metadata.Labels[k] != v {
			t.Errorf("WorkloadEndpoint label %s = %q, want %q (labels %v)", k, wep.Metadata.Labels[k], v, wep.Metadata.Labels)
		}
	}
	if wep.Spec.Workload != "shop/web-0" {
		t.Errorf("WorkloadEndpoint workload = %q, want shop/web-0", wep.Spec.Workload)
	}

	if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK through libcni: %v", err)
	}
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL through libcni: %v", err)
	}
	w.ip = netip.Addr{} // leftovers then looks for any allocation of the handle
	h.waitNoLeftovers(w, 5*time.Second)
	if err := cni.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("second DEL through libcni: %v", err)
	}
}

// TestGarbageCollection: CNI GC removes every attachment the runtime does
// not list as valid, and nothing else.
func TestGarbageCollection(t *testing.T) {
	h := newHost(t, hostOptions{})
	keep, stale := h.newWorkload("keep"), h.newWorkload("stale")
	h.add(keep)
	h.add(stale)
	var conf map[string]any
	if err := json.Unmarshal(h.conf, &conf); err != nil {
		t.Fatal(err)
	}
	conf["cni.dev/valid-attachments"] = []map[string]string{{"containerID": keep.containerID, "ifname": "eth0"}}
	gcConf, _ := json.Marshal(conf)
	if o := h.cni("GC", nil, gcConf); o.err != nil {
		t.Fatalf("GC: %v", o.err)
	}
	h.waitNoLeftovers(stale, 5*time.Second)
	checkWired(t, h, keep)
	if err := pingFrom(h.ns, keep.ip); err != nil {
		t.Errorf("the valid attachment after GC: %v", err)
	}
	if held := h.ipamHolds(keep); len(held) != 2 {
		t.Errorf("IPAM of the valid attachment after GC: %v", held)
	}
}

// TestFiftyConcurrentWorkloads: 50 ADDs at once get 50 distinct
// reachable addresses; two workloads reach each other; 50 DELs at once
// leave nothing.
func TestFiftyConcurrentWorkloads(t *testing.T) {
	const n = 50
	h := newHost(t, hostOptions{})
	ws := make([]*workload, n)
	for i := range ws {
		ws[i] = h.newWorkload(fmt.Sprintf("c%02d", i))
	}

	outcomes := parallel(n, n, func(i int) cniOutcome { return h.cni("ADD", ws[i], nil) })
	seen := map[netip.Addr]string{}
	var took []time.Duration
	for i, o := range outcomes {
		if o.err != nil {
			t.Fatalf("concurrent ADD %d: %v", i, o.err)
		}
		ws[i].ip, ws[i].result = resultIP(t, []byte(o.stdout)), []byte(o.stdout)
		if other, dup := seen[ws[i].ip]; dup {
			t.Fatalf("address %s handed to %s and %s", ws[i].ip, other, ws[i].name)
		}
		seen[ws[i].ip] = ws[i].name
		took = append(took, o.took)
	}
	t.Logf("50 concurrent ADDs, latency seen from the binary: %s", durationStats(took))

	if got := len(h.hostLinks()); got != n {
		t.Errorf("host has %d cx links, want %d", got, n)
	}
	pings := parallel(n, 10, func(i int) error {
		if err := h.hostRouteOK(ws[i]); err != nil {
			return err
		}
		return pingFrom(h.ns, ws[i].ip)
	})
	for i, err := range pings {
		if err != nil {
			t.Errorf("workload %d: %v", i, err)
		}
	}
	if err := pingFrom(ws[0].name, ws[1].ip); err != nil {
		t.Errorf("workload to workload on one host: %v", err)
	}
	if err := pingFrom(ws[1].name, ws[0].ip); err != nil {
		t.Errorf("workload to workload on one host (back): %v", err)
	}
	weps := h.etcdKeys(datastore.KindPrefix(datastore.KindWorkloadEndpoint))
	if len(weps) != n {
		t.Errorf("%d WorkloadEndpoints in etcd, want %d", len(weps), n)
	}
	if t.Failed() {
		t.FailNow()
	}

	dels := parallel(n, n, func(i int) cniOutcome { return h.cni("DEL", ws[i], nil) })
	took = took[:0]
	for i, o := range dels {
		if o.err != nil {
			t.Errorf("concurrent DEL %d: %v", i, o.err)
		}
		took = append(took, o.took)
	}
	t.Logf("50 concurrent DELs, latency seen from the binary: %s", durationStats(took))
	testutil.Eventually(t, 10*time.Second, "nothing left after 50 DELs", func() error {
		return h.nothingLeft(ws)
	})
}

// parallel runs fn for 0..n-1 with at most width at once.
func parallel[T any](n, width int, fn func(i int) T) []T {
	out := make([]T, n)
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = fn(i)
		}()
	}
	wg.Wait()
	return out
}

func durationStats(ds []time.Duration) string {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(f float64) time.Duration { return s[int(f*float64(len(s)-1))].Round(time.Millisecond) }
	return fmt.Sprintf("median %v, p90 %v, max %v", q(0.5), q(0.9), q(1))
}

// TestDriftRepaired: a workload's /32 deleted by hand and its proxy_arp
// turned off by hand come back without any CNI call.
func TestDriftRepaired(t *testing.T) {
	h := newHost(t, hostOptions{})
	w := h.newWorkload("d")
	h.add(w)

	events := watchRoutes(t, h.nsPath())
	run(t, "ip", "-n", h.ns, "route", "del", w.ip.String()+"/32", "dev", w.hostIf)
	start := time.Now()
	dst := netip.PrefixFrom(w.ip, 32)
	testutil.Eventually(t, 10*time.Second, "the agent restores a deleted /32", func() error {
		// The kernel's events prove the route went and came back (a poll
		// alone could miss a restore faster than itself).
		seen := events.sequence(dst)
		if !strings.Contains(seen, "DELROUTE NEWROUTE") {
			return fmt.Errorf("route events for %s: %q", dst, seen)
		}
		return h.hostRouteOK(w)
	})
	t.Logf("route restored after %v", time.Since(start).Round(time.Millisecond))

	key := "net/ipv4/conf/" + w.hostIf + "/proxy_arp"
	h.sysctl(key, "0")
	start = time.Now()
	testutil.Eventually(t, 10*time.Second, "the agent restores proxy_arp", func() error {
		if v := h.sysctl(key, ""); v != "1" {
			return fmt.Errorf("proxy_arp = %s", v)
		}
		return nil
	})
	t.Logf("proxy_arp restored after %v (resync interval %v)", time.Since(start).Round(time.Millisecond), resync)
	if err := pingFrom(w.name, netip.MustParseAddr(nodeIP)); err != nil {
		t.Errorf("workload to host after repair: %v", err)
	}
}

// TestRestartKeepsRoutes: stopping and starting the agent with workloads
// running neither deletes nor rewrites any of its routes.
func TestRestartKeepsRoutes(t *testing.T) {
	h := newHost(t, hostOptions{})
	ws := []*workload{h.newWorkload("r1"), h.newWorkload("r2"), h.newWorkload("r3")}
	var took []time.Duration
	for _, w := range ws {
		h.add(w)
		took = append(took, w.addTook)
	}
	t.Logf("sequential ADDs, latency seen from the binary: %s", durationStats(took))

	events := watchRoutes(t, h.nsPath())
	// Prove the watch sees the agent's writes: delete a route by hand and
	// wait for the agent's repair event.
	probe := netip.PrefixFrom(ws[0].ip, 32)
	run(t, "ip", "-n", h.ns, "route", "del", probe.String(), "dev", ws[0].hostIf)
	testutil.Eventually(t, 10*time.Second, "the watch sees the agent restore a route", func() error {
		if seen := events.sequence(probe); !strings.Contains(seen, "DELROUTE NEWROUTE") {
			return fmt.Errorf("route events for %s: %q", probe, seen)
		}
		return nil
	})
	before := h.workloadRoutes()
	mark := len(events.snapshot())

	if code := h.stopAgent(syscall.SIGTERM); code != 0 {
		t.Errorf("calyx-agent exit status after SIGTERM: %d, want 0", code)
	}
	for _, w := range ws {
		if err := pingFrom(h.ns, w.ip); err != nil {
			t.Errorf("with the agent stopped: %v", err)
		}
	}
	h.startAgent()
	h.waitInSync()
	h.waitStatusReady()
	// Let the first programming pass and one periodic resync happen.
	time.Sleep(resync + time.Second)
	got := events.snapshot()[mark:]
	var ours []string
	for _, u := range got {
		if u.Protocol == routes.ProtoWorkload {
			ours = append(ours, fmt.Sprintf("%s %v", routeEventType(u.Type), u.Dst))
		}
	}
	if len(ours) > 0 {
		t.Errorf("the restart touched the agent's routes: %v", ours)
	}
	after := h.workloadRoutes()
	if len(after) != len(before) {
		t.Errorf("proto %d routes before the restart %v, after %v", routes.ProtoWorkload, keys(before), keys(after))
	}
	for _, w := range ws {
		if err := pingFrom(h.ns, w.ip); err != nil {
			t.Errorf("after the restart: %v", err)
		}
	}
	w := h.newWorkload("r4")
	h.add(w)
	if slices.ContainsFunc(ws, func(x *workload) bool { return x.ip == w.ip }) {
		t.Errorf("the workload added after the restart got an address in use: %s", w.ip)
	}
	checkWired(t, h, w)
	if err := pingFrom(h.ns, w.ip); err != nil {
		t.Errorf("workload added after the restart: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "the watch sees the new workload's route", func() error {
		if seen := events.sequence(netip.PrefixFrom(w.ip, 32)); seen != "NEWROUTE" {
			return fmt.Errorf("route events for %s: %q, want one NEWROUTE", w.ip, seen)
		}
		return nil
	})
	if err := pingFrom(w.name, ws[0].ip); err != nil {
		t.Errorf("new workload to an old one: %v", err)
	}
}

// TestStatus: STATUS is not ready without a pool, ready with one, code 50
// with the agent down.
func TestStatus(t *testing.T) {
	h := newHost(t, hostOptions{noPool: true})
	// Right after start-up the reason may still be the policy dataplane;
	// once that is programmed, the missing pool is what STATUS names.
	testutil.Eventually(t, 10*time.Second, "STATUS names the missing IPPool", func() error {
		o := h.cni("STATUS", nil, nil)
		if o.err == nil {
			t.Fatalf("STATUS ready without any IPPool: %s", o.stdout)
		}
		if o.cniErr == nil || o.cniErr.Code != 50 || !strings.Contains(o.cniErr.Msg, "IPPool") {
			return o.err
		}
		return nil
	})
	h.applyPool()
	h.waitStatusReady()
	h.stopAgent(syscall.SIGTERM)
	o := h.cni("STATUS", nil, nil)
	expectCNIError(t, o, 50, "")
	if o.cniErr != nil && !strings.Contains(o.cniErr.Msg, h.socket) {
		t.Errorf("STATUS with the agent down does not name the socket: %q", o.cniErr.Msg)
	}
}
