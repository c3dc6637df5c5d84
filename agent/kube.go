package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/kube"
)

// Under Kubernetes the agent reads a pod from the API at CNI ADD, so that
// the endpoint has the pod's labels, named ports, service account and
// namespace profile before its first packet; everything later (label
// changes) comes from calyx-kube-controllers through etcd.

// podTimeout bounds the pod read of one ADD.
const podTimeout = 5 * time.Second

// inClusterToken is where a pod's service-account token is mounted.
const inClusterToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// kubeClient connects to the API server: --kubeconfig, or in-cluster when
// the agent runs in a pod; nil when neither (systemd hosts).
func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		if rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		if _, serr := os.Stat(inClusterToken); serr != nil {
			return nil, nil
		}
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
		}
	default:
		return nil, nil
	}
	rc.UserAgent = "calyx-agent"
	rc.Timeout = podTimeout
	return kubernetes.NewForConfig(rc)
}

// endpointMeta is what an endpoint gets besides its addresses.
type endpointMeta struct {
	labels   map[string]string
	profiles []string
	ports    []datastore.EndpointPort
}

// endpointMetaOf is the runtime's labels plus the automatic ones; for a
// Kubernetes pod (K8S_POD_NAMESPACE/NAME) with an API client, the pod's
// own from the API, which must answer: without it the pod's policy could
// be wrong at its first packet, so ADD fails with "try again later" and
// creates nothing.
func (a *Agent) endpointMetaOf(ctx context.Context, inv *apipb.Invocation) (endpointMeta, error) {
	labels, err := a.endpointLabels(inv)
	if err != nil {
		return endpointMeta{}, err
	}
	m := endpointMeta{labels: labels}
	ns, name := inv.GetArgs().GetK8SPodNamespace(), inv.GetArgs().GetK8SPodName()
	if ns == "" || name == "" {
		return m, nil
	}
	m.profiles = []string{kube.ProfileName(ns)}
	m.labels[datastore.LabelOrchestrator] = kube.Orchestrator
	if a.kube == nil {
		return m, nil
	}
	rctx, cancel := context.WithTimeout(ctx, podTimeout)
	defer cancel()
	pod, err := a.kube.CoreV1().Pods(ns).Get(rctx, name, metav1.GetOptions{})
	if err != nil {
		what := "the Kubernetes API did not answer"
		if apierrors.IsNotFound(err) {
			what = "the Kubernetes API has no such pod"
		}
		return m, apipb.Errorf(codes.Unavailable, apipb.CodeTryAgainLater, "reading pod %s/%s: %s; try again later: %v", ns, name, what, err)
	}
	pe := kube.EndpointOf(pod)
	for k := range m.labels {
		if datastore.IsReservedLabel(k) {
			delete(m.labels, k) // the pod's say, not the runtime's
		}
	}
	for k, v := range pe.Labels {
		m.labels[k] = v
	}
	m.labels[datastore.LabelNode] = datastore.LabelValue(a.node)
	m.profiles, m.ports = pe.Profiles, pe.Ports
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != a.node {
		a.log.Warn("pod is bound to another node than this agent's", "pod", ns+"/"+name, "pod_node", pod.Spec.NodeName, "node", a.node)
	}
	return m, nil
}

// nodeLabels are the labels the agent puts on its own Node: under
// Kubernetes, calyx.dev/orchestrator=k8s lets calyx-kube-controllers
// remove the Node once its Kubernetes Node is deleted.
func (a *Agent) nodeLabels() map[string]string {
	if a.kube == nil {
		return nil
	}
	return map[string]string{datastore.LabelOrchestrator: kube.Orchestrator}
}
