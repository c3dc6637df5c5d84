package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAddRefusedWhileTheKubernetesAPIIsDown: with a kubeconfig, ADD of a
// Kubernetes pod reads the pod first; an API server that does not answer
// fails the ADD with "try again later" (11), a message naming the pod, and
// nothing left behind. A workload that is no pod is not held up.
func TestAddRefusedWhileTheKubernetesAPIIsDown(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	// Port 1 of the host namespace's loopback: refused at once.
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, hostOptions{env: []string{"CALYX_KUBECONFIG=" + kubeconfig}})
	w := h.newWorkload("pod")
	o := h.cni("ADD", w, nil, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID="+w.containerID)
	if o.err == nil || o.cniErr == nil || o.cniErr.Code != 11 {
		t.Fatalf("ADD with the API down = %+v, want CNI error 11", o)
	}
	if msg := o.cniErr.Msg + " " + o.cniErr.Details; !strings.Contains(msg, "x/a") || !strings.Contains(msg, "Kubernetes API") {
		t.Errorf("error %q does not name the pod and the API", msg)
	}
	if err := h.nothingLeft([]*workload{w}); err != nil {
		t.Errorf("a refused ADD left something: %v", err)
	}
	plain := h.newWorkload("plain")
	h.add(plain)
}
