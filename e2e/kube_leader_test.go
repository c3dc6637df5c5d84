package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
	"github.com/calyx-net/calyx/kube"
)

// TestKubeLeaderElection runs two calyx-kube-controllers replicas: one
// holds the kube-system/calyx-kube-controllers Lease and translates, the
// other stands by and writes nothing; the leader killed (SIGKILL: no
// Lease release), the other takes the Lease once it expires and carries
// on; the killed one, started again, stands by.
func TestKubeLeaderElection(t *testing.T) {
	l := upKubeLab(t, lab.Options{Hosts: 1, KubeControllers: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kc, err := l.KubeClient()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		lease, err := kc.CoordinationV1().Leases(kube.LeaseNamespace).Get(ctx, kube.LeaseName, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}
	replica := map[string]int{lab.KubeControllersName(1): 1, lab.KubeControllersName(2): 2}
	leader := holder()
	if replica[leader] == 0 {
		t.Fatalf("the Lease is held by %q, not by a replica", leader)
	}
	standby := 3 - replica[leader]
	if _, err := kc.CoreV1().Namespaces().Create(ctx, nsObject("x"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	translated := func(name string) func() error {
		return func() error {
			if _, err := ds.Get(ctx, datastore.KindPolicy, kube.PolicyName("x", name)); err != nil {
				return fmt.Errorf("Calyx Policy of x/%s: %w", name, err)
			}
			return nil
		}
	}
	createPolicy := func(name string) {
		if _, err := kc.NetworkingV1().NetworkPolicies("x").Create(ctx, netpol("x", name, npSpec{PolicyTypes: types(ingressType)}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createPolicy("first")
	testutil.Eventually(t, 10*time.Second, "the leader translates", translated("first"))
	if body := controllersGet(ctx, t, l, standby, "/readyz"); !strings.Contains(body, "standing by") {
		t.Errorf("replica %d (not leading) says %q on /readyz, want standing by", standby, body)
	}
	if m := controllersGet(ctx, t, l, standby, "/metrics"); strings.Contains(m, "calyx_kube_reconciles_total{") {
		t.Errorf("the standby replica reconciled:\n%s", grepLines(m, "calyx_kube_reconciles_total"))
	}

	if err := l.StopKubeControllers(replica[leader], true); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	took := testutil.Eventually(t, 20*time.Second, "the standby takes the Lease", func() error {
		if h := holder(); h != lab.KubeControllersName(standby) {
			return fmt.Errorf("the Lease is held by %q", h)
		}
		return nil
	})
	t.Logf("leader killed -> Lease taken over in %v (lease duration 6 s)", took.Round(100*time.Millisecond))
	createPolicy("second")
	testutil.Eventually(t, 15*time.Second, "the new leader translates", translated("second"))
	t.Logf("leader killed -> a new NetworkPolicy translated in %v", time.Since(killed).Round(100*time.Millisecond))

	if err := l.StartKubeControllers(replica[leader]); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the restarted replica stands by", func() error {
		if body := controllersGet(ctx, t, l, replica[leader], "/readyz"); !strings.Contains(body, "standing by") {
			return fmt.Errorf("/readyz says %q", body)
		}
		return nil
	})
	if h := holder(); h != lab.KubeControllersName(standby) {
		t.Errorf("the Lease moved to %q after the old leader came back", h)
	}
}

// controllersGet reads a path of replica i's health or metrics server
// (on the etcd namespace's loopback); "" when it does not answer.
func controllersGet(ctx context.Context, t *testing.T, l *lab.Lab, i int, path string) string {
	t.Helper()
	health, metrics := lab.KubeControllersAddrs(i)
	addr := health
	if path == "/metrics" {
		addr = metrics
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return l.Dial(ctx, "etcd", addr) },
	}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
