package agent

import (
	"regexp"
	"testing"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/datastore"
)

// hostIfName is what datastore validation accepts as a WorkloadEndpoint's
// interfaceName.
var hostIfName = regexp.MustCompile(`^cx[a-z0-9]{1,13}$`)

// FuzzCNIRequestValidation: whatever a caller of the agent's CNI API
// sends (container ID, interface name, labels, CNI_ARGS), the agent either
// refuses it with a coded error or derives an attachment whose names are
// ours and labels that are valid, with every reserved label the agent's
// own.
func FuzzCNIRequestValidation(f *testing.F) {
	f.Add("c1", "eth0", "app", "web", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0", "shop", "web-0")
	f.Add("abc.x", "x.eth0", "calyx.dev/pod", "x", "calyx.dev/node=h2", "", "")
	f.Add("", "../../x", "", "", ";=;", "kube-system", "a-pod-name-far-longer-than-sixty-three-characters-of-a-label-value")
	f.Fuzz(func(t *testing.T, containerID, ifName, labelKey, labelValue, rawArgs, ns, pod string) {
		a := &Agent{node: "h1"}
		inv := &apipb.Invocation{ContainerId: containerID, Ifname: ifName, Labels: map[string]string{labelKey: labelValue},
			Args: &apipb.CNIArgs{Raw: rawArgs, K8SPodNamespace: ns, K8SPodName: pod}}
		at, err := a.attachmentOf(inv)
		if err != nil {
			if _, ok := apipb.CNIErrorFrom(err); !ok {
				t.Fatalf("refusal without a CNI code: %v", err)
			}
			return
		}
		if !hostIfName.MatchString(at.hostIf) {
			t.Fatalf("host interface %q is not cx + 1-13 lower-case letters or digits", at.hostIf)
		}
		labels, err := a.endpointLabels(inv)
		if err != nil {
			if _, ok := apipb.CNIErrorFrom(err); !ok {
				t.Fatalf("refusal without a CNI code: %v", err)
			}
			return
		}
		for k, v := range labels {
			if err := datastore.ValidateLabel(k, v); err != nil {
				t.Fatalf("endpoint label: %v", err)
			}
			if datastore.IsReservedLabel(k) && k != datastore.LabelNode && k != datastore.LabelNamespace && k != datastore.LabelPod {
				t.Fatalf("the caller set reserved label %s=%s", k, v)
			}
		}
		if labels[datastore.LabelNode] != "h1" {
			t.Fatalf("%s = %q, want h1", datastore.LabelNode, labels[datastore.LabelNode])
		}
		if pod != "" && labels[datastore.LabelPod] != datastore.LabelValue(pod) {
			t.Fatalf("pod %q: label %q, want %q", pod, labels[datastore.LabelPod], datastore.LabelValue(pod))
		}
	})
}
