package lab

import (
	"strings"
	"testing"
)

// TestKubeOptionsAndArgv: the Kubernetes options are checked, and the
// controllers' and agents' command lines point at the lab's kubeconfigs
// (which verify the API server with the lab CA) and etcd certificates.
func TestKubeOptionsAndArgv(t *testing.T) {
	dir := t.TempDir()
	if _, err := (Options{Dir: dir, KubeControllers: 2}).withDefaults(); err == nil || !strings.Contains(err.Error(), "--kubernetes") {
		t.Errorf("kube controllers without --kubernetes: %v", err)
	}
	if _, err := (Options{Dir: dir, Kubernetes: true, KubeControllers: 4}).withDefaults(); err == nil || !strings.Contains(err.Error(), "want 1 to 3") {
		t.Errorf("4 replicas: %v", err)
	}
	o, err := Options{Dir: dir, Kubernetes: true, BinDir: "/bin", KubeControllerArgs: []string{"--endpoint-gc-grace", "2s"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.KubeControllers != 1 {
		t.Errorf("default replicas %d, want 1", o.KubeControllers)
	}
	argv := KubeControllersArgv(o, 2)
	joined := strings.Join(argv, " ")
	for _, want := range []string{"--kubeconfig " + KubeconfigPath(o.Dir, "controllers"), "--leader-elect-identity kube-controllers2",
		"--etcd-cert " + clientFiles(o.Dir, "kube-controllers").Cert, "--endpoint-gc-grace 2s"} {
		if !strings.Contains(joined, want) {
			t.Errorf("controllers argv lacks %q: %s", want, joined)
		}
	}
	h1, m1 := KubeControllersAddrs(1)
	h2, m2 := KubeControllersAddrs(2)
	if seen := map[string]bool{h1: true, m1: true, h2: true, m2: true}; len(seen) != 4 {
		t.Errorf("replicas share an address: %s %s %s %s", h1, m1, h2, m2)
	}
	agent := strings.Join(AgentArgv(o, Host{Name: "host1", IP: HostIP(1)}), " ")
	if !strings.Contains(agent, "--kubeconfig "+KubeconfigPath(o.Dir, "agent")) {
		t.Errorf("agent argv lacks its kubeconfig: %s", agent)
	}
}
