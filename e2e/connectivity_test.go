package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestConnectivityMatrix: 3 hosts with 2 workloads each, node-to-node
// mesh: every workload and host reaches every other; the workload side and
// host side look as DESIGN.md says; a workload added later is reachable
// from every host and gone once deleted.
func TestConnectivityMatrix(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 3, Workloads: 2})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	eps := l.Endpoints(true)
	var m lab.Matrix
	testutil.Eventually(t, 20*time.Second, "full ping matrix", func() error {
		m = l.PingMatrix(ctx, eps, eps, 8)
		if f := m.Failed(); len(f) > 0 {
			return errors.New("failures:\n" + m.String())
		}
		return nil
	})
	t.Logf("\n%s", m)

	w, err := l.Workload("h1-w1")
	if err != nil {
		t.Fatal(err)
	}
	out, err := l.Exec(w.Name, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, w.IP()+"/32") {
		t.Errorf("workload eth0 should hold %s/32: %q %v", w.IP(), out, err)
	}
	out, err = l.Exec(w.Name, "ip", "-4", "route", "show", "default")
	if err != nil || !strings.Contains(out, "via 169.254.1.1") {
		t.Errorf("workload default route should go via 169.254.1.1: %q %v", out, err)
	}
	out, err = l.Exec("host1", "ip", "-4", "route", "show", w.IP())
	if err != nil || !strings.Contains(out, "dev cx") {
		t.Errorf("host1 should route %s through a cx veth: %q %v", w.IP(), out, err)
	}

	// Add, reach from every host, delete.
	added, err := l.AddWorkload(ctx, "late", "host3", map[string]string{"app": "late"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range l.Hosts() {
		testutil.Eventually(t, 10*time.Second, h.Name+" reaches the new workload", func() error { return l.Ping(h.Name, added.IP()) })
	}
	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	weps, _, err := ds.List(ctx, datastore.KindWorkloadEndpoint)
	if err != nil || !hasEndpointWith(weps, added.IP()) {
		t.Errorf("no WorkloadEndpoint holds %s: %v", added.IP(), err)
	}
	if err := l.DelWorkload(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the deleted workload is unreachable", func() error {
		if l.Ping("host1", added.IP()) == nil {
			return errors.New("still answers")
		}
		return nil
	})
	weps, _, _ = ds.List(ctx, datastore.KindWorkloadEndpoint)
	if hasEndpointWith(weps, added.IP()) {
		t.Errorf("the WorkloadEndpoint of a deleted workload is still there")
	}
}

func hasEndpointWith(weps []datastore.Resource, ip string) bool {
	for _, r := range weps {
		for _, n := range r.(*datastore.WorkloadEndpoint).Spec.IPNetworks {
			if strings.HasPrefix(n, ip+"/") {
				return true
			}
		}
	}
	return false
}
