package lab

import (
	"context"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Pod is a pod AddPod makes: the API object, bound to Host (no
// scheduler, no kubelet), then its sandbox as containerd would make it.
type Pod struct {
	Namespace, Name, Host string
	Labels                map[string]string
	// Ports are the container's ports (named ones serve NetworkPolicies).
	Ports          []corev1.ContainerPort
	ServiceAccount string // default "default"
}

// PodWorkloadName is the lab workload of pod ns/name: "ns-name" (pods of
// LabNamespace keep their own name).
func PodWorkloadName(ns, name string) string {
	if ns == LabNamespace {
		return name
	}
	return ns + "-" + name
}

// AddPod creates the pod in the API (spec.nodeName = its host, the
// namespace and service account made if missing), then a namespace for
// its sandbox wired through the calyx plugin with containerd's CNI_ARGS
// (IgnoreUnknown=1;K8S_POD_NAMESPACE;K8S_POD_NAME;K8S_POD_INFRA_CONTAINER_ID):
// the agent reads the pod from the API at ADD. A failed ADD deletes the
// pod again.
func (l *Lab) AddPod(ctx context.Context, p Pod) (Workload, error) {
	var w Workload
	err := l.locked(ctx, func() error {
		var err error
		w, err = l.addPod(ctx, p)
		return err
	})
	return w, err
}

func (l *Lab) addPod(ctx context.Context, p Pod) (Workload, error) {
	if !l.opts.Kubernetes {
		return Workload{}, errors.New("this lab runs no Kubernetes API server (calyx-lab up --kubernetes)")
	}
	if _, ok := l.st.host(p.Host); !ok {
		return Workload{}, fmt.Errorf("no host %q in this lab (hosts: host1..host%d)", p.Host, len(l.st.Hosts))
	}
	name := PodWorkloadName(p.Namespace, p.Name)
	if err := validateWorkloadName(name); err != nil {
		return Workload{}, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	if _, ok := l.st.workload(name); ok {
		return Workload{}, fmt.Errorf("workload %q already exists", name)
	}
	kc, err := l.KubeClient()
	if err != nil {
		return Workload{}, err
	}
	if err := createPodObject(ctx, kc, p); err != nil {
		return Workload{}, err
	}
	w, err := l.addWorkloadOf(ctx, Workload{Name: name, Host: p.Host, Labels: p.Labels, PodNamespace: p.Namespace, PodName: p.Name})
	if err != nil {
		_ = deletePodObject(context.Background(), kc, p.Namespace, p.Name)
		return Workload{}, err
	}
	return w, nil
}

// createPodObject makes the pod (and its namespace and service account,
// which nobody else makes without kube-controller-manager).
func createPodObject(ctx context.Context, kc kubernetes.Interface, p Pod) error {
	_, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", p.Namespace, err)
	}
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	_, err = kc.CoreV1().ServiceAccounts(p.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service account %s/%s: %w", p.Namespace, sa, err)
	}
	zero := int64(0)
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: maps.Clone(p.Labels)},
		Spec: corev1.PodSpec{
			NodeName:                      p.Host,
			ServiceAccountName:            sa,
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &zero,
			Containers:                    []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10", Ports: p.Ports}},
		},
	}
	if _, err := kc.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// deletePodObject removes the pod at once (grace 0: no kubelet confirms).
func deletePodObject(ctx context.Context, kc kubernetes.Interface, ns, name string) error {
	zero := int64(0)
	err := kc.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// DelPod tears the pod's sandbox down (CNI DEL, its namespace), then
// deletes the API object, as kubelet does (DelWorkload).
func (l *Lab) DelPod(ctx context.Context, ns, name string) error {
	return l.DelWorkload(ctx, PodWorkloadName(ns, name))
}

// DropWorkload removes a workload's namespace without CNI DEL, as a
// host that died takes its sandboxes: its endpoint and addresses stay in
// etcd (for the controllers' garbage collection to find).
func (l *Lab) DropWorkload(ctx context.Context, name string) error {
	return l.locked(ctx, func() error {
		w, ok := l.st.workload(name)
		if !ok {
			return fmt.Errorf("no workload %q in this lab", name)
		}
		if err := deleteNamespace(ctx, w.Netns); err != nil {
			return err
		}
		l.st.removeNamespace(w.Netns)
		l.st.removeWorkload(name)
		return l.save()
	})
}
