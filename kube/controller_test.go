package kube

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/internal/testutil"
)

type ctrlHarness struct {
	t    *testing.T
	ctx  context.Context
	kc   *fake.Clientset
	ds   *datastore.Client
	ipam *ipam.IPAM
}

// newHarness runs the controllers on a fake API (client-go's fake
// clientset) and a real embedded etcd.
func newHarness(t *testing.T) *ctrlHarness {
	t.Helper()
	e := etcdtest.Start(t)
	ds := datastore.NewClientFromEtcd(e.Client(t))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kc := fake.NewClientset()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := &ctrlHarness{t: t, ctx: ctx, kc: kc, ds: ds, ipam: ipam.New(ds, log)}
	pool, _ := datastore.NewResource(datastore.KindIPPool)
	pool.GetMeta().Name = "pool"
	pool.(*datastore.IPPool).Spec.CIDR = "10.244.0.0/16"
	h.put(pool)
	c := New(Config{Kube: kc, Datastore: ds, IPAM: h.ipam, Log: log, EndpointGCGrace: 300 * time.Millisecond, NodeRetry: 100 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 10*time.Second, "controllers in sync", testutil.Holds(c.Synced))
	return h
}

func (h *ctrlHarness) put(r datastore.Resource) {
	h.t.Helper()
	if _, err := h.ds.Apply(h.ctx, r); err != nil {
		h.t.Fatal(err)
	}
}

func (h *ctrlHarness) get(kind datastore.Kind, name string) datastore.Resource {
	r, err := h.ds.Get(h.ctx, kind, name)
	if err != nil {
		return nil
	}
	return r
}

// agentEndpoint writes what an agent writes on CNI ADD for pod ns/name on
// node, with its address from IPAM.
func (h *ctrlHarness) agentEndpoint(node, ns, name, containerID string) *datastore.WorkloadEndpoint {
	h.t.Helper()
	epName := datastore.WorkloadEndpointName(node, containerID, "eth0")
	addrs, err := h.ipam.Allocate(h.ctx, ipam.Request{Handle: ipam.HandleID(containerID, "eth0"), Node: node,
		Attrs: ipam.Attributes{Namespace: ns, Pod: name, Endpoint: epName}})
	if err != nil {
		h.t.Fatal(err)
	}
	r, _ := datastore.NewResource(datastore.KindWorkloadEndpoint)
	w := r.(*datastore.WorkloadEndpoint)
	w.Metadata.Name = epName
	w.Metadata.Labels = map[string]string{datastore.LabelNode: node, datastore.LabelNamespace: ns, datastore.LabelPod: name, datastore.LabelOrchestrator: Orchestrator}
	w.Spec = datastore.WorkloadEndpointSpec{Node: node, Workload: ns + "/" + name, ContainerID: containerID, InterfaceName: "cx0123456789a",
		ContainerInterface: "eth0", IPNetworks: []string{addrs[0].String()}}
	h.put(w)
	return w
}

func (h *ctrlHarness) eventually(what string, cond func() bool) {
	h.t.Helper()
	testutil.Eventually(h.t, 10*time.Second, what, testutil.Holds(cond))
}

func TestControllersPolicyLifecycle(t *testing.T) {
	h := newHarness(t)
	nps := h.kc.NetworkingV1().NetworkPolicies("x")
	np := np("allow-a", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}})
	if _, err := nps.Create(h.ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the NetworkPolicy's Calyx Policy", func() bool { return h.get(datastore.KindPolicy, "knp.x.allow-a") != nil })

	// A manual edit is reverted.
	p := h.get(datastore.KindPolicy, "knp.x.allow-a").(*datastore.Policy)
	p.Spec.Ingress = nil
	h.put(p)
	h.eventually("the manual edit reverted", func() bool {
		r := h.get(datastore.KindPolicy, "knp.x.allow-a")
		return r != nil && len(r.(*datastore.Policy).Spec.Ingress) == 1
	})
	// So is a manual delete.
	if err := h.ds.Delete(h.ctx, datastore.KindPolicy, "knp.x.allow-a"); err != nil {
		t.Fatal(err)
	}
	h.eventually("the manual delete reverted", func() bool { return h.get(datastore.KindPolicy, "knp.x.allow-a") != nil })

	// A user's Policy that happens to have a translated name is left alone.
	user, _ := datastore.NewResource(datastore.KindPolicy)
	user.GetMeta().Name = "knp.x.mine"
	user.(*datastore.Policy).Spec.Selector = `app == "mine"`
	h.put(user)
	if _, err := nps.Create(h.ctx, np2("mine"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// An owned orphan (no NetworkPolicy) is deleted.
	orphan, _ := TranslatePolicy(np2("ghost"))
	h.put(orphan)
	h.eventually("the orphan deleted", func() bool { return h.get(datastore.KindPolicy, "knp.x.ghost") == nil })
	if r := h.get(datastore.KindPolicy, "knp.x.mine"); r == nil || owned(r) || r.(*datastore.Policy).Spec.Selector != `app == "mine"` {
		t.Errorf("the user's Policy was changed: %+v", r)
	}

	if err := nps.Delete(h.ctx, "allow-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the Calyx Policy deleted with its NetworkPolicy", func() bool { return h.get(datastore.KindPolicy, "knp.x.allow-a") == nil })
	if err := nps.Delete(h.ctx, "mine", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if h.get(datastore.KindPolicy, "knp.x.mine") == nil {
		t.Error("the user's Policy was deleted")
	}
}

func np2(name string) *networkingv1.NetworkPolicy { return np(name, networkingv1.NetworkPolicySpec{}) }

func TestControllersNamespacesAndPods(t *testing.T) {
	h := newHarness(t)
	nsc := h.kc.CoreV1().Namespaces()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"team": "blue"}}}
	if _, err := nsc.Create(h.ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the namespace's Profile", func() bool {
		r := h.get(datastore.KindProfile, "kns.x")
		return r != nil && r.(*datastore.Profile).Spec.LabelsToApply["pcns.team"] == "blue"
	})
	ns.Labels["team"] = "red"
	if _, err := nsc.Update(h.ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the Profile follows the namespace's labels", func() bool {
		r := h.get(datastore.KindProfile, "kns.x")
		return r != nil && r.(*datastore.Profile).Spec.LabelsToApply["pcns.team"] == "red"
	})

	pods := h.kc.CoreV1().Pods("x")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}}}
	if _, err := pods.Create(h.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := h.agentEndpoint("n1", "x", "a", "c0ffee01")
	h.eventually("the pod's labels, profile and ports on its endpoint", func() bool {
		r := h.get(datastore.KindWorkloadEndpoint, w.Metadata.Name)
		if r == nil {
			return false
		}
		got := r.(*datastore.WorkloadEndpoint)
		return got.Metadata.Labels["pod"] == "a" && got.Metadata.Labels[datastore.LabelNode] == "n1" &&
			len(got.Spec.Profiles) == 1 && got.Spec.Profiles[0] == "kns.x" && len(got.Spec.Ports) == 1 && got.Spec.Ports[0].Port == 80
	})
	pod.Labels = map[string]string{"pod": "b"}
	if _, err := pods.Update(h.ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("a pod label change on its endpoint", func() bool {
		r := h.get(datastore.KindWorkloadEndpoint, w.Metadata.Name)
		return r != nil && r.GetMeta().Labels["pod"] == "b"
	})

	// The pod goes while its node is down (nobody ran CNI DEL): its
	// endpoint and address are released, not before the grace period.
	if err := pods.Delete(h.ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the endpoint of the deleted pod released", func() bool { return h.get(datastore.KindWorkloadEndpoint, w.Metadata.Name) == nil })
	if _, err := h.ipam.Allocate(h.ctx, ipam.Request{Handle: "probe.eth0", Node: "n1", IPs: []netip.Addr{netip.MustParsePrefix(w.Spec.IPNetworks[0]).Addr()}}); err != nil {
		t.Errorf("the released address cannot be allocated again: %v", err)
	}

	// An endpoint whose pod exists in the API but not (yet) in the cache
	// keeps its address: the live read decides.
	live := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "live"}, Spec: corev1.PodSpec{NodeName: "n1"}}
	if _, err := pods.Create(h.ctx, live, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lw := h.agentEndpoint("n1", "x", "live", "c0ffee02")
	time.Sleep(time.Second)
	if h.get(datastore.KindWorkloadEndpoint, lw.Metadata.Name) == nil {
		t.Error("the endpoint of an existing pod was released")
	}
	if err := nsc.Delete(h.ctx, "x", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the Profile deleted with its namespace", func() bool { return h.get(datastore.KindProfile, "kns.x") == nil })
}

func TestControllersNodeRemoval(t *testing.T) {
	h := newHarness(t)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}
	if _, err := h.kc.CoreV1().Nodes().Create(h.ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cn, _ := datastore.NewResource(datastore.KindNode)
	cn.GetMeta().Name = "n2"
	cn.(*datastore.Node).Spec.Address = "198.18.0.2"
	h.put(cn)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"}, Spec: corev1.PodSpec{NodeName: "n2"}}
	if _, err := h.kc.CoreV1().Pods("x").Create(h.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := h.agentEndpoint("n2", "x", "p", "d00d0001")
	if err := h.kc.CoreV1().Nodes().Delete(h.ctx, "n2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if h.get(datastore.KindNode, "n2") == nil || h.get(datastore.KindWorkloadEndpoint, w.Metadata.Name) == nil {
		t.Fatal("the node was removed while a pod still names it")
	}
	if err := h.kc.CoreV1().Pods("x").Delete(h.ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the Calyx Node removed", func() bool { return h.get(datastore.KindNode, "n2") == nil })
	if h.get(datastore.KindWorkloadEndpoint, w.Metadata.Name) != nil {
		t.Error("the node's endpoint is left")
	}
	usage, err := h.ipam.Show(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(usage.Blocks); n != 0 {
		t.Errorf("%d blocks left after the node went: %+v", n, usage.Blocks)
	}
}

// TestApplyOwnedNeverOverwritesAUsersResource: with the controllers'
// etcd view behind (it has not seen the user's Policy yet), a translated
// Policy of the same name is not written over the user's; once the view
// caught up, it is left alone for good. (An unconditional write did
// overwrite it, which made TestControllersPolicyLifecycle flaky.)
func TestApplyOwnedNeverOverwritesAUsersResource(t *testing.T) {
	e := etcdtest.Start(t)
	ds := datastore.NewClientFromEtcd(e.Client(t))
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	c := New(Config{Kube: fake.NewClientset(), Datastore: ds, IPAM: ipam.New(ds, log), Log: log}) // not running: its view stays empty
	user, _ := datastore.NewResource(datastore.KindPolicy)
	user.GetMeta().Name = "knp.x.mine"
	user.(*datastore.Policy).Spec.Selector = `app == "mine"`
	if _, err := ds.Apply(ctx, user); err != nil {
		t.Fatal(err)
	}
	want, err := TranslatePolicy(np2("mine"))
	if err != nil {
		t.Fatal(err)
	}
	wrote, err := c.applyOwned(ctx, want)
	if wrote || err == nil {
		t.Errorf("applyOwned over a user's Policy unseen by the view = %v, %v; want not written and an error (retry)", wrote, err)
	}
	if wrote, err = c.applyOwned(ctx, want); wrote || err != nil {
		t.Errorf("applyOwned once the view has the user's Policy = %v, %v; want left alone", wrote, err)
	}
	r, err := ds.Get(ctx, datastore.KindPolicy, "knp.x.mine")
	if err != nil || owned(r) || r.(*datastore.Policy).Spec.Selector != `app == "mine"` {
		t.Errorf("the user's Policy was changed: %+v %v", r, err)
	}

	// A Calyx Node event queues the node controller (a Node that shows
	// up after its Kubernetes Node was deleted must still go).
	n, _ := datastore.NewResource(datastore.KindNode)
	n.GetMeta().Name = "n9"
	c.onEtcdChange(n)
	if got := c.queues[ctrlNode].q.Len(); got != 1 {
		t.Errorf("a Node event queued %d node reconciles, want 1", got)
	}
}
