package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestKubePodLifecycle follows pods and nodes through the real API server:
// a pod's label change reaches its WorkloadEndpoint and the policy
// follows; pods deleted while their node's agent is down get their
// endpoint and address released by calyx-kube-controllers (never those of
// a pod that still exists); a new pod's policy holds from its first
// packet; a Kubernetes Node deleted for good takes its Calyx Node,
// affinities and blocks with it.
func TestKubePodLifecycle(t *testing.T) {
	l := upKubeLab(t, lab.Options{Hosts: 3, KubeControllerArgs: []string{"--endpoint-gc-grace", "2s"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc, err := l.KubeClient()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	addPod := func(name, host string, labels map[string]string) lab.Workload {
		w, err := l.AddPod(ctx, lab.Pod{Namespace: "x", Name: name, Host: host, Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	web := addPod("web", "host1", map[string]string{"app": "web"})
	client := addPod("client", "host2", map[string]string{"app": "client"})
	keep := addPod("keep", "host3", map[string]string{"app": "keep"})
	gone := addPod("gone", "host3", map[string]string{"app": "gone"})

	ln, err := l.Listen(web.Name, ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lab.DiscardConns(ln)
	connects := func(from lab.Workload, to string) bool {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		c, err := l.Dial(cctx, from.Name, net.JoinHostPort(to, "8080"))
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	testutil.Eventually(t, 10*time.Second, "client reaches web before any policy", testutil.Holds(func() bool { return connects(client, web.IP()) }))

	// ---- a pod label change reaches its endpoint, and the policy follows
	np := netpol("x", "web-from-frontend", npSpec{PodSelector: *labels("app", "web"),
		Ingress: []inRule{{From: []peer{{PodSelector: labels("role", "frontend")}}}}})
	if _, err := kc.NetworkingV1().NetworkPolicies("x").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the policy blocks client", testutil.Holds(func() bool { return !connects(client, web.IP()) }))
	relabel := func(role string) time.Time {
		pod, err := kc.CoreV1().Pods("x").Get(ctx, "client", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod.Labels = map[string]string{"app": "client"}
		if role != "" {
			pod.Labels["role"] = role
		}
		if _, err := kc.CoreV1().Pods("x").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	start := relabel("frontend")
	testutil.Eventually(t, 5*time.Second, "client labelled role=frontend reaches web", testutil.Holds(func() bool { return connects(client, web.IP()) }))
	t.Logf("label change to traffic allowed: %v (probes of 300 ms; make bench measures it finely)", time.Since(start).Round(time.Millisecond))
	if w := endpointOf(ctx, t, ds, "x/client"); w == nil || w.Metadata.Labels["role"] != "frontend" || w.Metadata.Labels[datastore.LabelNode] != "host2" {
		t.Errorf("the client's endpoint does not carry its new label (and its node): %+v", w)
	}
	relabel("")
	testutil.Eventually(t, 5*time.Second, "client without the label is blocked again", testutil.Holds(func() bool { return !connects(client, web.IP()) }))

	// ---- a new pod's policy holds from its first packet: the agent read
	// the pod at ADD. Clients on its host (its route is there once ADD
	// returns): the first connection of the allowed one gets through, the
	// other's first one does not.
	fe := addPod("fe", "host1", map[string]string{"role": "frontend"})
	other := addPod("other", "host1", map[string]string{"app": "other"})
	web2 := addPod("web2", "host1", map[string]string{"app": "web"})
	ln2, err := l.Listen(web2.Name, ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	lab.DiscardConns(ln2)
	if connects(other, web2.IP()) {
		t.Error("a new pod selected by a policy accepted a connection it denies, right after CNI ADD")
	}
	if !connects(fe, web2.IP()) {
		t.Error("a new pod selected by a policy refused the first connection it allows, right after CNI ADD")
	}
	if err := kc.NetworkingV1().NetworkPolicies("x").Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// ---- pods deleted while their node's agent is down
	if err := l.StopAgent("host3"); err != nil {
		t.Fatal(err)
	}
	goneEP, keepEP := endpointOf(ctx, t, ds, "x/gone"), endpointOf(ctx, t, ds, "x/keep")
	if goneEP == nil || keepEP == nil {
		t.Fatal("the endpoints of x/gone and x/keep are not in etcd")
	}
	// host3 lost its sandbox of x/gone (nobody ran CNI DEL) and the pod
	// was deleted from the API.
	if err := l.DropWorkload(ctx, gone.Name); err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if err := kc.CoreV1().Pods("x").Delete(ctx, "gone", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	ipm := ipam.New(ds, slog.New(slog.DiscardHandler))
	testutil.Eventually(t, 20*time.Second, "the deleted pod's endpoint and address released", func() error {
		if endpointOf(ctx, t, ds, "x/gone") != nil {
			return errors.New("its endpoint is still in etcd")
		}
		if info, err := ipm.LookupIP(ctx, netip.MustParseAddr(gone.IP())); err != nil || info.Allocated {
			return fmt.Errorf("its address %s is still allocated (%v)", gone.IP(), err)
		}
		return nil
	})
	if w := endpointOf(ctx, t, ds, "x/keep"); w == nil {
		t.Error("the endpoint of x/keep, a pod that exists, was released")
	}
	if info, err := ipm.LookupIP(ctx, netip.MustParseAddr(keep.IP())); err != nil || !info.Allocated {
		t.Errorf("the address of x/keep, a pod that exists, was released: %+v %v", info, err)
	}
	if err := l.StartAgent(ctx, "host3"); err != nil {
		t.Fatal(err)
	}
	if err := l.Ping(client.Name, keep.IP()); err != nil {
		t.Errorf("x/keep is unreachable once host3's agent is back: %v", err)
	}

	// ---- a Kubernetes Node deleted for good
	if err := l.StopAgent("host3"); err != nil {
		t.Fatal(err)
	}
	if err := l.DropWorkload(ctx, keep.Name); err != nil {
		t.Fatal(err)
	}
	if err := kc.CoreV1().Pods("x").Delete(ctx, "keep", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if err := kc.CoreV1().Nodes().Delete(ctx, "host3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "host3's Calyx Node, affinities and blocks removed", func() error {
		if _, err := ds.Get(ctx, datastore.KindNode, "host3"); !errors.Is(err, datastore.ErrNotFound) {
			return fmt.Errorf("the Calyx Node host3 is still there (%v)", err)
		}
		resp, err := ds.Etcd().Get(ctx, ipam.AffinityPrefix+"host3/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count > 0 {
			return fmt.Errorf("%d block affinities of host3 left", resp.Count)
		}
		for _, b := range blocks(ctx, t, l) {
			if b.Node == "host3" {
				return fmt.Errorf("block %s of host3 left", b.CIDR)
			}
		}
		if info, err := ipm.LookupIP(ctx, netip.MustParseAddr(keep.IP())); err != nil || info.Allocated {
			return fmt.Errorf("x/keep's address %s is still allocated (%v)", keep.IP(), err)
		}
		return nil
	})
	// The other nodes are untouched.
	for _, n := range []string{"host1", "host2"} {
		if _, err := ds.Get(ctx, datastore.KindNode, n); err != nil {
			t.Errorf("Calyx Node %s: %v", n, err)
		}
	}
	if !connects(client, web.IP()) {
		t.Error("client no longer reaches web after host3 went")
	}
}

// endpointOf is the WorkloadEndpoint of pod "ns/name", nil if none.
func endpointOf(ctx context.Context, t *testing.T, ds *datastore.Client, pod string) *datastore.WorkloadEndpoint {
	t.Helper()
	rs, _, err := ds.List(ctx, datastore.KindWorkloadEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if w := r.(*datastore.WorkloadEndpoint); w.Spec.Workload == pod {
			return w
		}
	}
	return nil
}
