package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestKubeNetworkPolicyDualStack: in a dual-stack Kubernetes lab, one
// NetworkPolicy holds for both families (selectors match pods, whatever
// the address), and ipBlocks of either family apply to that family only.
func TestKubeNetworkPolicyDualStack(t *testing.T) {
	l := upKubeLab(t, lab.Options{Hosts: 2, IPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kc, err := l.KubeClient()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"x", "y"} {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, nsObject(ns), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	add := func(ns, name, host string) lab.Workload {
		w, err := l.AddPod(ctx, lab.Pod{Namespace: ns, Name: name, Host: host, Labels: map[string]string{"pod": name}})
		if err != nil {
			t.Fatal(err)
		}
		if w.IPv4() == "" || w.IPv6() == "" {
			t.Fatalf("pod %s/%s has %v, want one address of each family", ns, name, w.IPs)
		}
		return w
	}
	server := add("x", "server", "host2")
	allowed := add("x", "allowed", "host1")
	other := add("y", "other", "host1")
	ln, err := l.Listen(server.Name, ":80") // both families
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lab.DiscardConns(ln)

	connects := func(from lab.Workload, ip string) bool {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		c, err := l.Dial(cctx, from.Name, net.JoinHostPort(ip, "80"))
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	// want[client][family] is whether it reaches the server.
	check := func(what string, want map[string][2]bool) {
		t.Helper()
		clients := map[string]lab.Workload{"allowed": allowed, "other": other}
		testutil.Eventually(t, 15*time.Second, what, func() error {
			for name, w := range want {
				for fam, ip := range []string{server.IPv4(), server.IPv6()} {
					if got := connects(clients[name], ip); got != w[fam] {
						return fmt.Errorf("%s to the server's %s: reaches %v, want %v", name, ip, got, w[fam])
					}
				}
			}
			return nil
		})
	}
	nps := kc.NetworkingV1().NetworkPolicies("x")
	set := func(spec networkingv1.NetworkPolicySpec) {
		_ = nps.Delete(ctx, "p", metav1.DeleteOptions{})
		spec.PodSelector = *labels("pod", "server")
		if _, err := nps.Create(ctx, netpol("x", "p", spec), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	check("no policy: both clients reach the server over IPv4 and IPv6", map[string][2]bool{"allowed": {true, true}, "other": {true, true}})

	set(npSpec{Ingress: []inRule{{From: []peer{{PodSelector: labels("pod", "allowed")}}}}})
	check("podSelector: x/allowed over both families, y/other over neither", map[string][2]bool{"allowed": {true, true}, "other": {false, false}})

	set(npSpec{Ingress: []inRule{{From: []peer{ipBlock(allowed.IPv6() + "/128")}}}})
	check("an IPv6 ipBlock of x/allowed: its IPv6 only", map[string][2]bool{"allowed": {false, true}, "other": {false, false}})

	set(npSpec{Ingress: []inRule{{From: []peer{ipBlock(l.Options().Pool6, allowed.IPv6()+"/128"), ipBlock(allowed.IPv4() + "/32")}}}})
	check("the IPv6 pool except x/allowed, and x/allowed's IPv4", map[string][2]bool{"allowed": {true, false}, "other": {false, true}})

	if err := nps.Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check("policy deleted", map[string][2]bool{"allowed": {true, true}, "other": {true, true}})
}
