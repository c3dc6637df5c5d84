package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/calyx-net/calyx/datastore"
)

// ---- policy -------------------------------------------------------------------

// syncPolicy makes the Calyx Policy of NetworkPolicy key ("ns/name")
// match it, or deletes it. A key without "/" is a Calyx Policy name to
// check for an orphan.
func (c *Controllers) syncPolicy(ctx context.Context, key string) (time.Duration, error) {
	lister := c.factory.Networking().V1().NetworkPolicies().Lister()
	if !strings.Contains(key, "/") {
		for _, np := range mustList(lister.List(everything())) {
			if PolicyName(np.Namespace, np.Name) == key {
				c.enqueue(ctrlPolicy, np.Namespace+"/"+np.Name)
				return 0, nil
			}
		}
		return 0, c.deleteOwned(ctx, datastore.KindPolicy, key)
	}
	ns, name, _ := strings.Cut(key, "/")
	calyxName := PolicyName(ns, name)
	np, err := lister.NetworkPolicies(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.mu.Lock()
		delete(c.policyOf, calyxName)
		c.mu.Unlock()
		return 0, c.deleteOwned(ctx, datastore.KindPolicy, calyxName)
	}
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.policyOf[calyxName] = key
	c.mu.Unlock()
	want, err := TranslatePolicy(np)
	if err != nil {
		// Fail closed: the pods it selects get its default deny.
		c.log.Error("NetworkPolicy cannot be translated; its pods get its default deny only", "policy", key, "err", err)
		want = denyOnly(np)
	}
	if wrote, err := c.applyOwned(ctx, want); err != nil || !wrote {
		return 0, err
	}
	c.log.Info("NetworkPolicy translated", "policy", key, "calyx_policy", calyxName)
	return 0, nil
}

// denyOnly is a policy that selects what np selects, for np's directions,
// and allows nothing.
func denyOnly(np interface {
	GetNamespace() string
	GetName() string
}) *datastore.Policy {
	r, _ := datastore.NewResource(datastore.KindPolicy)
	p := r.(*datastore.Policy)
	p.Metadata.Name = PolicyName(np.GetNamespace(), np.GetName())
	p.Metadata.Labels = ownedLabels()
	order := PolicyOrder
	p.Spec.Order = &order
	p.Spec.Selector = inNamespace(np.GetNamespace())
	p.Spec.Types = []datastore.PolicyType{datastore.PolicyTypeIngress, datastore.PolicyTypeEgress}
	return p
}

// ---- namespaces -----------------------------------------------------------------

func (c *Controllers) syncNamespace(ctx context.Context, name string) (time.Duration, error) {
	ns, err := c.factory.Core().V1().Namespaces().Lister().Get(name)
	if apierrors.IsNotFound(err) {
		return 0, c.deleteOwned(ctx, datastore.KindProfile, ProfileName(name))
	}
	if err != nil {
		return 0, err
	}
	want, skipped := TranslateNamespace(ns)
	if len(skipped) > 0 {
		c.log.Warn("namespace labels too long for a profile label are left out", "namespace", name, "labels", skipped)
	}
	_, err = c.applyOwned(ctx, want)
	return 0, err
}

// ---- pods -------------------------------------------------------------------------

// syncPod makes pod key's endpoints carry its labels, profile and named
// ports; endpoints whose pod is gone (or lives on another node now) are
// released once it has been gone for the grace period, after a live read
// of the API confirms it.
func (c *Controllers) syncPod(ctx context.Context, key string) (time.Duration, error) {
	ns, name, _ := strings.Cut(key, "/")
	pod, err := c.factory.Core().V1().Pods().Lister().Pods(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	if err != nil {
		pod = nil
	}
	var requeue time.Duration
	var errs []error
	for _, w := range c.st.endpointsOf(key) {
		if pod != nil && (pod.Spec.NodeName == "" || pod.Spec.NodeName == w.Spec.Node) {
			c.mu.Lock()
			delete(c.missingSince, w.Metadata.Name)
			c.mu.Unlock()
			if err := c.relabel(ctx, w.Metadata.Name, pod); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		after, err := c.releaseIfGone(ctx, w)
		if err != nil {
			errs = append(errs, err)
		}
		if after > 0 && (requeue == 0 || after < requeue) {
			requeue = after
		}
	}
	return requeue, errors.Join(errs...)
}

// relabel writes the pod's labels, profile and ports onto one endpoint,
// keeping the labels the agent set (calyx.dev/node). It reads the
// endpoint fresh and writes with its revision, so an agent's write in
// between is never lost.
func (c *Controllers) relabel(ctx context.Context, wepName string, pod *corev1.Pod) error {
	want := EndpointOf(pod)
	for attempt := 0; attempt < 5; attempt++ {
		r, err := c.cfg.Datastore.Get(ctx, datastore.KindWorkloadEndpoint, wepName)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		w := r.(*datastore.WorkloadEndpoint)
		labels := maps.Clone(want.Labels)
		if n, ok := w.Metadata.Labels[datastore.LabelNode]; ok {
			labels[datastore.LabelNode] = n
		}
		if maps.Equal(labels, w.Metadata.Labels) && slices.Equal(want.Profiles, w.Spec.Profiles) && slices.Equal(want.Ports, w.Spec.Ports) {
			return nil
		}
		w.Metadata.Labels, w.Spec.Profiles, w.Spec.Ports = labels, want.Profiles, want.Ports
		_, err = c.cfg.Datastore.Update(ctx, w)
		if errors.Is(err, datastore.ErrConflict) {
			continue
		}
		if err == nil {
			c.log.Info("pod labels written to its endpoint", "pod", pod.Namespace+"/"+pod.Name, "endpoint", wepName)
		}
		return err
	}
	return fmt.Errorf("endpoint %s kept changing while its labels were written", wepName)
}

// releaseIfGone releases an endpoint whose pod the cache no longer has,
// once the grace period is over and the API itself says the pod is gone
// (or bound to another node): never an address of a pod that exists.
func (c *Controllers) releaseIfGone(ctx context.Context, w *datastore.WorkloadEndpoint) (time.Duration, error) {
	name := w.Metadata.Name
	c.mu.Lock()
	since, seen := c.missingSince[name]
	if !seen {
		since = time.Now()
		c.missingSince[name] = since
	}
	c.mu.Unlock()
	if left := c.cfg.EndpointGCGrace - time.Since(since); left > 0 {
		return left, nil
	}
	ns, podName, _ := strings.Cut(w.Spec.Workload, "/")
	pod, err := c.cfg.Kube.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	switch {
	case err == nil && (pod.Spec.NodeName == "" || pod.Spec.NodeName == w.Spec.Node):
		c.mu.Lock()
		delete(c.missingSince, name)
		c.mu.Unlock()
		c.enqueue(ctrlPod, w.Spec.Workload) // the cache lags: relabel later
		return 0, nil
	case err != nil && !apierrors.IsNotFound(err):
		return 0, fmt.Errorf("reading pod %s before releasing its endpoint: %w", w.Spec.Workload, err)
	}
	if err := c.releaseEndpoint(ctx, w); err != nil {
		return 0, err
	}
	c.mu.Lock()
	delete(c.missingSince, name)
	c.mu.Unlock()
	c.log.Warn("released the endpoint and addresses of a pod that no longer exists", "pod", w.Spec.Workload, "endpoint", name, "node", w.Spec.Node, "addresses", w.Spec.IPNetworks)
	return 0, nil
}

// releaseEndpoint frees an endpoint's addresses, then deletes it.
func (c *Controllers) releaseEndpoint(ctx context.Context, w *datastore.WorkloadEndpoint) error {
	if w.Spec.ContainerID != "" {
		ifName := w.Spec.ContainerInterface
		if ifName == "" {
			ifName = "eth0"
		}
		if err := c.cfg.IPAM.ReleaseAttachment(ctx, w.Spec.Node, w.Spec.ContainerID, ifName); err != nil {
			return fmt.Errorf("releasing the addresses of %s: %w", w.Metadata.Name, err)
		}
	}
	if err := c.cfg.Datastore.Delete(ctx, datastore.KindWorkloadEndpoint, w.Metadata.Name); err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return err
	}
	c.st.remove(datastore.KindWorkloadEndpoint, w.Metadata.Name)
	return nil
}

// ---- nodes ------------------------------------------------------------------------

// syncNode removes what a deleted Kubernetes Node leaves in Calyx: its
// endpoints and their addresses, its empty blocks and affinities, its
// Calyx Node, once no pod in the API names it any more. A Calyx Node is
// only removed when its Kubernetes Node was seen deleted, or when its
// agent ran under Kubernetes (calyx.dev/orchestrator=k8s): a host outside
// Kubernetes keeps its Node.
func (c *Controllers) syncNode(ctx context.Context, name string) (time.Duration, error) {
	if _, err := c.factory.Core().V1().Nodes().Lister().Get(name); err == nil {
		return 0, nil
	}
	cn := c.st.get(datastore.KindNode, name)
	if cn == nil {
		return 0, nil
	}
	c.mu.Lock()
	seenGone := c.nodesGone[name]
	c.mu.Unlock()
	if !seenGone && cn.GetMeta().Labels[datastore.LabelOrchestrator] != Orchestrator {
		return 0, nil
	}
	_, err := c.cfg.Kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return 0, nil // the cache lags: it exists
	case !apierrors.IsNotFound(err):
		return 0, fmt.Errorf("reading node %s: %w", name, err)
	}
	pods, err := c.cfg.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", name).String()})
	if err != nil {
		return 0, fmt.Errorf("listing the pods of node %s: %w", name, err)
	}
	left := 0
	for _, p := range pods.Items {
		if p.Spec.NodeName == name { // the server filters; a cache or fake may not
			left++
		}
	}
	if left > 0 {
		c.log.Info("node deleted; waiting for its pods to go before releasing its addresses", "node", name, "pods", left)
		return c.cfg.NodeRetry, nil
	}
	var errs []error
	for _, r := range c.st.list(datastore.KindWorkloadEndpoint) {
		if w := r.(*datastore.WorkloadEndpoint); w.Spec.Node == name {
			errs = append(errs, c.releaseEndpoint(ctx, w))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if _, err := c.cfg.IPAM.GCNode(ctx, name, 0); err != nil {
		return 0, fmt.Errorf("releasing the addresses of node %s: %w", name, err)
	}
	blocks, err := c.cfg.IPAM.ReleaseEmptyAffinities(ctx, name, 0)
	if err != nil {
		return 0, fmt.Errorf("releasing the blocks of node %s: %w", name, err)
	}
	if err := c.cfg.Datastore.Delete(ctx, datastore.KindNode, name); err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return 0, err
	}
	c.st.remove(datastore.KindNode, name)
	c.mu.Lock()
	delete(c.nodesGone, name)
	c.mu.Unlock()
	c.log.Warn("removed a deleted node from Calyx", "node", name, "blocks_released", len(blocks))
	return 0, nil
}
