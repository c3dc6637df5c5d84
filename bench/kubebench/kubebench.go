// Package kubebench measures, with real traffic in a --kubernetes lab
// (the real kube-apiserver, calyx-kube-controllers, agents), how long a
// Kubernetes change takes to be enforced on the node: a NetworkPolicy
// created through the API, and a pod's label change. `make bench` calls
// Run.
package kubebench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// goalMs is the goal of both figures (Calico's take seconds).
const goalMs = 500

// Run measures k8s_policy_enforced_p99_ms and
// k8s_label_change_enforced_p99_ms; quick takes fewer samples.
func Run(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error) {
	n := 30
	if quick {
		n = 8
	}
	return benchkit.RunInLab(ctx, "kube", log, lab.Options{Hosts: 2, Kubernetes: true},
		func(l *lab.Lab, _ string, log *slog.Logger) ([]bench.Figure, error) {
			r, err := setUp(ctx, l)
			if err != nil {
				return nil, err
			}
			defer r.ln.Close()
			policy, err := r.policyEnforced(n)
			if err != nil {
				return nil, err
			}
			label, err := r.labelChangeEnforced(n)
			if err != nil {
				return nil, err
			}
			return []bench.Figure{policy, label}, nil
		})
}

// runner holds the lab's server pod (x/server on host2, TCP 8080) and
// client pod (x/client on host1).
type runner struct {
	ctx    context.Context
	l      *lab.Lab
	kc     kubernetes.Interface
	ln     net.Listener
	client string
	target string
}

func setUp(ctx context.Context, l *lab.Lab) (*runner, error) {
	kc, err := l.KubeClient()
	if err != nil {
		return nil, err
	}
	server, err := l.AddPod(ctx, lab.Pod{Namespace: "x", Name: "server", Host: "host2", Labels: map[string]string{"app": "server"}})
	if err != nil {
		return nil, err
	}
	client, err := l.AddPod(ctx, lab.Pod{Namespace: "x", Name: "client", Host: "host1", Labels: map[string]string{"app": "client"}})
	if err != nil {
		return nil, err
	}
	ln, err := l.Listen(server.Name, ":8080")
	if err != nil {
		return nil, err
	}
	lab.DiscardConns(ln)
	r := &runner{ctx: ctx, l: l, kc: kc, ln: ln, client: client.Name, target: net.JoinHostPort(server.IP(), "8080")}
	if _, err := r.firstConnect(time.Now(), 10*time.Second); err != nil {
		return nil, fmt.Errorf("client to server before any policy: %w", err)
	}
	return r, nil
}

// connects tries one connection with the timeout.
func (r *runner) connects(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	c, err := r.l.Dial(ctx, r.client, r.target)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// attemptEvery is how often a new connection is tried: the resolution.
const attemptEvery = 5 * time.Millisecond

// firstConnect starts a connection attempt every attemptEvery (each with
// its own 250 ms timeout: a SYN dropped before enforcement is never
// retransmitted within it) and returns how long after t0 the first
// attempt that got through was started.
func (r *runner) firstConnect(t0 time.Time, limit time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(r.ctx, limit)
	defer cancel()
	won := make(chan time.Time, 1)
	tick := time.NewTicker(attemptEvery)
	defer tick.Stop()
	for {
		start := time.Now()
		go func() {
			if r.connects(250 * time.Millisecond) {
				select {
				case won <- start:
				default:
				}
			}
		}()
		select {
		case s := <-won:
			return s.Sub(t0), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("no connection from %s to %s within %v", r.client, r.target, limit)
		case <-tick.C:
		}
	}
}

// waitBlocked waits until two attempts in a row fail.
func (r *runner) waitBlocked() error {
	deadline := time.Now().Add(10 * time.Second)
	failed := 0
	for failed < 2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still reaches %s", r.client, r.target)
		}
		if r.connects(100 * time.Millisecond) {
			failed = 0
			time.Sleep(10 * time.Millisecond)
			continue
		}
		failed++
	}
	return nil
}

func (r *runner) nps() interface {
	Create(context.Context, *networkingv1.NetworkPolicy, metav1.CreateOptions) (*networkingv1.NetworkPolicy, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
} {
	return r.kc.NetworkingV1().NetworkPolicies("x")
}

func policy(name string, from map[string]string) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if from != nil {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: from}}}}}
	}
	return np
}

// policyEnforced: the server is isolated by a default deny; each sample
// creates a NetworkPolicy allowing the client and times, from the
// create call, the first connection that gets through; then deletes it
// and waits until the client is blocked again.
func (r *runner) policyEnforced(n int) (bench.Figure, error) {
	if _, err := r.nps().Create(r.ctx, policy("deny", nil), metav1.CreateOptions{}); err != nil {
		return bench.Figure{}, err
	}
	if err := r.waitBlocked(); err != nil {
		return bench.Figure{}, fmt.Errorf("default deny: %w", err)
	}
	var took []time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := r.nps().Create(r.ctx, policy("allow", map[string]string{"app": "client"}), metav1.CreateOptions{}); err != nil {
			return bench.Figure{}, err
		}
		d, err := r.firstConnect(t0, 10*time.Second)
		if err != nil {
			return bench.Figure{}, fmt.Errorf("sample %d: the allowing NetworkPolicy: %w", i, err)
		}
		took = append(took, d)
		if err := r.nps().Delete(r.ctx, "allow", metav1.DeleteOptions{}); err != nil {
			return bench.Figure{}, err
		}
		if err := r.waitBlocked(); err != nil {
			return bench.Figure{}, fmt.Errorf("sample %d: the allowing NetworkPolicy deleted: %w", i, err)
		}
	}
	return figure("k8s_policy_enforced_p99_ms", took,
		"NetworkPolicy allowing a blocked client created through the real kube-apiserver -> first TCP connection through (client and server on two hosts; a new attempt every 5 ms)"), nil
}

// labelChangeEnforced: a NetworkPolicy lets role=client pods in; each
// sample labels the client role=client and times, from the update call,
// the first connection through; then removes the label and waits until
// it is blocked again.
func (r *runner) labelChangeEnforced(n int) (bench.Figure, error) {
	if err := r.nps().Delete(r.ctx, "deny", metav1.DeleteOptions{}); err != nil {
		return bench.Figure{}, err
	}
	if _, err := r.nps().Create(r.ctx, policy("from-role-client", map[string]string{"role": "client"}), metav1.CreateOptions{}); err != nil {
		return bench.Figure{}, err
	}
	if err := r.waitBlocked(); err != nil {
		return bench.Figure{}, fmt.Errorf("policy on role=client: %w", err)
	}
	pods := r.kc.CoreV1().Pods("x")
	setRole := func(role string) error {
		p, err := pods.Get(r.ctx, "client", metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Labels = map[string]string{"app": "client"}
		if role != "" {
			p.Labels["role"] = role
		}
		_, err = pods.Update(r.ctx, p, metav1.UpdateOptions{})
		return err
	}
	var took []time.Duration
	for i := 0; i < n; i++ {
		p, err := pods.Get(r.ctx, "client", metav1.GetOptions{})
		if err != nil {
			return bench.Figure{}, err
		}
		p.Labels["role"] = "client"
		t0 := time.Now()
		if _, err := pods.Update(r.ctx, p, metav1.UpdateOptions{}); err != nil {
			return bench.Figure{}, err
		}
		d, err := r.firstConnect(t0, 10*time.Second)
		if err != nil {
			return bench.Figure{}, fmt.Errorf("sample %d: client labelled: %w", i, err)
		}
		took = append(took, d)
		if err := setRole(""); err != nil {
			return bench.Figure{}, err
		}
		if err := r.waitBlocked(); err != nil {
			return bench.Figure{}, fmt.Errorf("sample %d: label removed: %w", i, err)
		}
	}
	return figure("k8s_label_change_enforced_p99_ms", took,
		"client pod's label change (Update through the real kube-apiserver) -> first TCP connection through under a NetworkPolicy selecting that label (a new attempt every 5 ms)"), nil
}

func figure(name string, took []time.Duration, what string) bench.Figure {
	p99 := benchkit.PercentileMs(took, 99)
	f := bench.NewRatio(bench.Figure{
		Name: name, Unit: "ms", Calyx: p99, Peer: goalMs, PeerName: "goal: 500 ms (Calico's take seconds)",
		Goal:  fmt.Sprintf("p99 <= %d ms", goalMs),
		Notes: fmt.Sprintf("%s; %d samples, p50 %.1f ms, p99 %.1f ms", what, len(took), benchkit.PercentileMs(took, 50), p99),
	})
	f.Met = p99 <= goalMs
	return f
}
