package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
	"github.com/calyx-net/calyx/datastore/ipam"
)

// ipamSetup starts etcd, applies the pool p (10.9.0.0/24 in /28 blocks)
// and docs, and allocates an address on n1 for the handles c1.eth0 and
// c2.eth0 (endpoints n1-c1-eth0, n1-c2-eth0; pods shop/web-1, shop/web-2).
func ipamSetup(t *testing.T, docs string) (string, []string) {
	t.Helper()
	e := etcdtest.Start(t)
	if r := ctl(t, e.Endpoint, "apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.9.0.0/24, blockSize: 28}\n"+docs, "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	c, err := datastore.NewClient(datastore.Config{Endpoints: []string{e.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	im := ipam.New(c, slog.New(slog.DiscardHandler))
	var ips []string
	for _, h := range []string{"c1.eth0", "c2.eth0"} {
		got, err := im.Allocate(context.Background(), ipam.Request{Handle: h, Node: "n1", Attrs: ipam.Attributes{
			Endpoint: "n1-" + strings.TrimSuffix(h, ".eth0") + "-eth0", Namespace: "shop", Pod: "web-" + h[1:2]}})
		if err != nil {
			t.Fatal(err)
		}
		ips = append(ips, got[0].Addr().String())
	}
	return e.Endpoint, ips
}

func TestIPAMCommands(t *testing.T) {
	endpoint, ips := ipamSetup(t, "---\napiVersion: calyx.dev/v1\nkind: Node\nmetadata: {name: n1}\nspec: {address: 198.18.0.1}\n")

	r := ctl(t, endpoint, "", "ipam", "show", "-o", "json")
	var u map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &u); err != nil || r.code != 0 {
		t.Fatalf("ipam show -o json: %v %s %s", err, r.stdout, r.stderr)
	}
	if r := ctl(t, endpoint, "", "ipam", "show"); r.code != 0 || !strings.Contains(r.stdout, "10.9.0.0/24") {
		t.Errorf("ipam show: %s %s", r.stdout, r.stderr)
	}
	// Two allocations without endpoints: check reports them and fails.
	r = ctl(t, endpoint, "", "ipam", "check")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, ips[0]) {
		t.Errorf("ipam check did not report the leaked allocation: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Operator repair of one address, then GC of the rest.
	if r := ctl(t, endpoint, "", "ipam", "release", "--ip", ips[0]); r.code != 0 || !strings.Contains(r.stdout, "released "+ips[0]) {
		t.Errorf("ipam release: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := ctl(t, endpoint, "", "ipam", "release", "--ip", ips[0]); r.code == 0 {
		t.Errorf("releasing a free address succeeded")
	}
	// n1 is registered: only its own agent (which sees its workloads) may
	// release its allocations, so a cluster-wide gc keeps them and says why.
	if r := ctl(t, endpoint, "", "ipam", "gc", "--grace", "0s"); r.code != 0 || !strings.Contains(r.stdout, "kept") || !strings.Contains(r.stdout, "is registered") {
		t.Errorf("ipam gc with n1 registered: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Once the node has left the cluster, its leaked allocation goes.
	if r := ctl(t, endpoint, "", "delete", "node", "n1"); r.code != 0 {
		t.Fatalf("delete node: %s", r.stderr)
	}
	if r := ctl(t, endpoint, "", "ipam", "gc", "--grace", "0s"); r.code != 0 || !strings.Contains(r.stdout, ips[1]) {
		t.Errorf("ipam gc: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// The block it emptied belongs to no node now: the next pass frees it.
	if r := ctl(t, endpoint, "", "ipam", "gc", "--grace", "0s"); r.code != 0 || !strings.Contains(r.stdout, "10.9.0.0/28") {
		t.Errorf("second ipam gc did not free the empty block of the removed node: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := ctl(t, endpoint, "", "ipam", "check"); r.code != 0 {
		t.Errorf("ipam check after gc: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := ctl(t, endpoint, "", "ipam", "release", "--ip", "nope"); r.code != 2 {
		t.Errorf("bad --ip: %d %s", r.code, r.stderr)
	}
}

// ipam show --ip says who holds an address (node, handle, endpoint and
// whether it exists, pod), and that a free one is free, in table and JSON.
func TestIPAMShowIP(t *testing.T) {
	endpoint, ips := ipamSetup(t, "")
	// The first address's endpoint exists, the second's does not.
	wep := "apiVersion: calyx.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: n1-c1-eth0}\nspec: {node: n1, workload: shop/web-1, interfaceName: cx0123456789a, ipNetworks: [" + ips[0] + "/32]}\n"
	if r := ctl(t, endpoint, wep, "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.stderr)
	}

	r := ctl(t, endpoint, "", "ipam", "show", "--ip", ips[0])
	for _, want := range []string{ips[0] + " (allocated)", "NODE      n1", "HANDLE    c1.eth0", "n1-c1-eth0 (workload shop/web-1)", "POD       shop/web-1", "POOL      p", "10.9.0.0/28 (affinity n1)"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("ipam show --ip %s lacks %q: %d\n%s%s", ips[0], want, r.code, r.stdout, r.stderr)
		}
	}
	if r := ctl(t, endpoint, "", "ipam", "show", "--ip", ips[1]); !strings.Contains(r.stdout, "MISSING") {
		t.Errorf("a leaked address is not called out:\n%s", r.stdout)
	}

	r = ctl(t, endpoint, "", "ipam", "show", "--ip", ips[0], "-o", "json")
	var got struct {
		IP         string `json:"ip"`
		Allocated  bool   `json:"allocated"`
		Block      string `json:"block"`
		Pools      []string
		Allocation struct {
			Handle, Node, Endpoint, Namespace, Pod string
		} `json:"allocation"`
		EndpointExists bool `json:"endpointExists"`
		HandleListsIt  bool `json:"handleListsIt"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if !got.Allocated || got.IP != ips[0] || got.Allocation.Node != "n1" || got.Allocation.Handle != "c1.eth0" ||
		got.Allocation.Pod != "web-1" || !got.EndpointExists || !got.HandleListsIt || got.Block != "10.9.0.0/28" || len(got.Pools) != 1 {
		t.Errorf("-o json: %+v\n%s", got, r.stdout)
	}

	// Free: in the block, outside any block, outside every pool.
	for ip, want := range map[string]string{
		"10.9.0.9":  "10.9.0.9 is not allocated (pool p; block 10.9.0.0/28, affinity n1)",
		"10.9.0.77": "10.9.0.77 is not allocated (pool p; no block holds it yet)",
		"192.0.2.1": "192.0.2.1 is not allocated (pool none (no IPPool holds it); no block holds it yet)",
	} {
		if r := ctl(t, endpoint, "", "ipam", "show", "--ip", ip); r.code != 0 || strings.TrimSpace(r.stdout) != want {
			t.Errorf("ipam show --ip %s: %d %q, want %q %s", ip, r.code, r.stdout, want, r.stderr)
		}
	}
	r = ctl(t, endpoint, "", "ipam", "show", "--ip", "10.9.0.9", "-o", "json")
	if !strings.Contains(r.stdout, `"allocated": false`) {
		t.Errorf("free address in JSON: %s", r.stdout)
	}
	if r := ctl(t, endpoint, "", "ipam", "show", "--ip", "10.9.0"); r.code != 2 || !strings.Contains(r.stderr, "not an IP address") {
		t.Errorf("bad --ip: %d %s", r.code, r.stderr)
	}
}
