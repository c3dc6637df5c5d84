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

func TestIPAMCommands(t *testing.T) {
	e := etcdtest.Start(t)
	if r := ctl(t, e.Endpoint, "apiVersion: calyx.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.9.0.0/24, blockSize: 28}\n---\napiVersion: calyx.dev/v1\nkind: Node\nmetadata: {name: n1}\nspec: {address: 198.18.0.1}\n", "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	c, err := datastore.NewClient(datastore.Config{Endpoints: []string{e.Endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	im := ipam.New(c, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	var ips []string
	for _, h := range []string{"c1.eth0", "c2.eth0"} {
		got, err := im.Allocate(ctx, ipam.Request{Handle: h, Node: "n1", Attrs: ipam.Attributes{Endpoint: "n1-" + strings.TrimSuffix(h, ".eth0") + "-eth0"}})
		if err != nil {
			t.Fatal(err)
		}
		ips = append(ips, got[0].Addr().String())
	}

	r := ctl(t, e.Endpoint, "", "ipam", "show", "-o", "json")
	var u map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &u); err != nil || r.code != 0 {
		t.Fatalf("ipam show -o json: %v %s %s", err, r.stdout, r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "ipam", "show"); r.code != 0 || !strings.Contains(r.stdout, "10.9.0.0/24") {
		t.Errorf("ipam show: %s %s", r.stdout, r.stderr)
	}
	// Two allocations without endpoints: check reports them and fails.
	r = ctl(t, e.Endpoint, "", "ipam", "check")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, ips[0]) {
		t.Errorf("ipam check did not report the leaked allocation: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Operator repair of one address, then GC of the rest.
	if r := ctl(t, e.Endpoint, "", "ipam", "release", "--ip", ips[0]); r.code != 0 || !strings.Contains(r.stdout, "released "+ips[0]) {
		t.Errorf("ipam release: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "ipam", "release", "--ip", ips[0]); r.code == 0 {
		t.Errorf("releasing a free address succeeded")
	}
	// n1 is registered: only its own agent (which sees its workloads) may
	// release its allocations, so a cluster-wide gc keeps them and says why.
	if r := ctl(t, e.Endpoint, "", "ipam", "gc", "--grace", "0s"); r.code != 0 || !strings.Contains(r.stdout, "kept") || !strings.Contains(r.stdout, "is registered") {
		t.Errorf("ipam gc with n1 registered: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Once the node has left the cluster, its leaked allocation goes.
	if r := ctl(t, e.Endpoint, "", "delete", "node", "n1"); r.code != 0 {
		t.Fatalf("delete node: %s", r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "ipam", "gc", "--grace", "0s"); r.code != 0 || !strings.Contains(r.stdout, ips[1]) {
		t.Errorf("ipam gc: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// The block it emptied belongs to no node now: the next pass frees it.
	if r := ctl(t, e.Endpoint, "", "ipam", "gc", "--grace", "0s"); r.code != 0 || !strings.Contains(r.stdout, "10.9.0.0/28") {
		t.Errorf("second ipam gc did not free the empty block of the removed node: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "ipam", "check"); r.code != 0 {
		t.Errorf("ipam check after gc: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := ctl(t, e.Endpoint, "", "ipam", "release", "--ip", "nope"); r.code != 2 {
		t.Errorf("bad --ip: %d %s", r.code, r.stderr)
	}
}
