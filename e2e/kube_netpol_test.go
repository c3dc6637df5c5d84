package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calyx-net/calyx/e2e/lab"
)

type (
	npSpec  = networkingv1.NetworkPolicySpec
	inRule  = networkingv1.NetworkPolicyIngressRule
	outRule = networkingv1.NetworkPolicyEgressRule
	peer    = networkingv1.NetworkPolicyPeer
	npPort  = networkingv1.NetworkPolicyPort
)

// netpolCase is one case of the suite: policies, then the truth table
// they must give; steps (label changes) may follow, each with its table.
type netpolCase struct {
	name     string
	policies func(m *netpolModel) []*networkingv1.NetworkPolicy
	want     reach
	steps    []netpolStep
}

type netpolStep struct {
	name string
	do   func(ctx context.Context, m *netpolModel)
	want reach
}

// TestKubeNetworkPolicy runs the upstream-model cases against the real
// kube-apiserver: NetworkPolicies made through the API, translated by
// calyx-kube-controllers, enforced by the agents, checked with real TCP
// and UDP traffic between every pair of the nine pods on ports 80 and 81.
func TestKubeNetworkPolicy(t *testing.T) {
	l := upKubeLab(t, lab.Options{Hosts: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := newNetpolModel(ctx, t, l)
	m.expect(ctx, "no policy: everything reaches everything", allowAll)
	if t.Failed() {
		t.FailNow()
	}
	t.Log(errSCTP)
	for _, c := range netpolCases() {
		// Subtests share the lab and run in order: -run 'TestKubeNetworkPolicy/endPort'.
		t.Run(c.name, func(t *testing.T) {
			parent := m.t
			m.t = t
			defer func() { m.t = parent }()
			start := time.Now()
			m.apply(ctx, c.policies(m)...)
			m.expect(ctx, c.name, c.want)
			for _, s := range c.steps {
				s.do(ctx, m)
				m.expect(ctx, c.name+": "+s.name, s.want)
			}
			m.reset(ctx)
			t.Logf("%v", time.Since(start).Round(10*time.Millisecond))
		})
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
	}
}

func netpolCases() []netpolCase {
	all := &metav1.LabelSelector{}
	return []netpolCase{
		{
			name: "default deny ingress in x",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "deny-ingress", npSpec{PolicyTypes: types(ingressType)})}
			},
			want: func(f, to *kpod, _ portProto) bool { return to.ns != "x" },
		},
		{
			name: "default deny egress in x",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "deny-egress", npSpec{PolicyTypes: types(egressType)})}
			},
			want: func(f, to *kpod, _ portProto) bool { return f.ns != "x" },
		},
		{
			name: "default deny ingress and egress in x (policyTypes both)",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "deny-all", npSpec{PolicyTypes: types(ingressType, egressType)})}
			},
			want: func(f, to *kpod, _ portProto) bool { return f.ns != "x" && to.ns != "x" },
		},
		{
			name: "allow-all ingress (ingress: [{}]) beside a default deny: policies add up",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					netpol("x", "deny-ingress", npSpec{PolicyTypes: types(ingressType)}),
					netpol("x", "allow-all", npSpec{Ingress: []inRule{{}}}),
				}
			},
			want: allowAll,
		},
		{
			name: "ingress: [] denies (policyTypes inferred: Ingress)",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("y", "deny", npSpec{PodSelector: *labels("pod", "b"), Ingress: []inRule{}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("y/b") },
		},
		{
			name: "podSelector matchLabels: x/a only from x/b (its namespace only)",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "a-from-b", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{PodSelector: labels("pod", "b")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.is("x/b") },
		},
		{
			name: "podSelector matchExpressions In: x/a from pods b and c of x",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				sel := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("pod", metav1.LabelSelectorOpIn, "b", "c")}}
				return []*networkingv1.NetworkPolicy{netpol("x", "a-from-bc", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{PodSelector: sel}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || in(f, "x/b", "x/c") },
		},
		{
			name: "matchExpressions NotIn, Exists, DoesNotExist: x/b and x/c from pods with pod and no role, namespaces not y",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				target := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("pod", metav1.LabelSelectorOpNotIn, "a")}}
				pods := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					expr("pod", metav1.LabelSelectorOpExists), expr("role", metav1.LabelSelectorOpDoesNotExist)}}
				nss := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("ns", metav1.LabelSelectorOpNotIn, "y")}}
				return []*networkingv1.NetworkPolicy{netpol("x", "exprs", npSpec{PodSelector: target,
					Ingress: []inRule{{From: []peer{{PodSelector: pods, NamespaceSelector: nss}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !in(to, "x/b", "x/c") || f.ns != "y" },
		},
		{
			name: "namespaceSelector alone: pods of x only from namespace y",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "from-y", npSpec{PodSelector: *all,
					Ingress: []inRule{{From: []peer{{NamespaceSelector: labels("ns", "y")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return to.ns != "x" || f.ns == "y" },
		},
		{
			name: "namespaceSelector on the default kubernetes.io/metadata.name label, NotIn x",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				nss := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{expr("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "x")}}
				return []*networkingv1.NetworkPolicy{netpol("x", "not-from-x", npSpec{PodSelector: *all,
					Ingress: []inRule{{From: []peer{{NamespaceSelector: nss}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return to.ns != "x" || f.ns != "x" },
		},
		{
			name: "namespaceSelector and podSelector in one peer: x/a only from y/b",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "from-yb", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{NamespaceSelector: labels("ns", "y"), PodSelector: labels("pod", "b")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.is("y/b") },
		},
		{
			name: "namespaceSelector or podSelector (two peers): x/a from namespace y and from x/b",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "from-y-or-b", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{NamespaceSelector: labels("ns", "y")}, {PodSelector: labels("pod", "b")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.ns == "y" || f.is("x/b") },
		},
		{
			name: "ports: x/a only on TCP 81, from anywhere",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "tcp81", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{Ports: []npPort{numPort(corev1.ProtocolTCP, 81)}}}})}
			},
			want: func(f, to *kpod, pp portProto) bool { return !to.is("x/a") || pp == tcp81 },
		},
		{
			name: "a protocol without a port: x/a on every UDP port, no TCP",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "udp", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{Ports: []npPort{protoOnly(corev1.ProtocolUDP)}}}})}
			},
			want: func(f, to *kpod, pp portProto) bool { return !to.is("x/a") || pp.proto == corev1.ProtocolUDP },
		},
		{
			name: "endPort: x/a on TCP 75-80 and UDP 81-90",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "ranges", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{Ports: []npPort{numPort(corev1.ProtocolTCP, 75, 80), numPort(corev1.ProtocolUDP, 81, 90)}}}})}
			},
			want: func(f, to *kpod, pp portProto) bool { return !to.is("x/a") || pp == tcp80 || pp == udp81 },
		},
		{
			name: "SCTP only: x/a is isolated for TCP and UDP (SCTP is not TCP)",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "sctp", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{Ports: []npPort{numPort(corev1.ProtocolSCTP, 80), namedPort("serve-80-sctp", corev1.ProtocolSCTP)}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") },
		},
		{
			name: "named ports on ingress: pods of x on serve-80-tcp and UDP serve-81-udp",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "named", npSpec{PodSelector: *all,
					Ingress: []inRule{{Ports: []npPort{namedPort("serve-80-tcp"), namedPort("serve-81-udp", corev1.ProtocolUDP)}}}})}
			},
			want: func(f, to *kpod, pp portProto) bool { return to.ns != "x" || pp == tcp80 || pp == udp81 },
		},
		{
			name: "named port from a namespace: x/a on serve-81-tcp from namespace y",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "named-from-y", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{NamespaceSelector: labels("ns", "y")}}, Ports: []npPort{namedPort("serve-81-tcp")}}}})}
			},
			want: func(f, to *kpod, pp portProto) bool { return !to.is("x/a") || (f.ns == "y" && pp == tcp81) },
		},
		{
			name: "named port on egress (the peers' port): pods of x to serve-80-tcp only",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "egress-named", npSpec{PodSelector: *all, PolicyTypes: types(egressType),
					Egress: []outRule{{Ports: []npPort{namedPort("serve-80-tcp")}}}})}
			},
			want: func(f, to *kpod, pp portProto) bool { return f.ns != "x" || pp == tcp80 },
		},
		{
			name: "egress (policyTypes inferred): x/a only to namespace y",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "a-to-y", npSpec{PodSelector: *labels("pod", "a"),
					PolicyTypes: types(egressType), Egress: []outRule{{To: []peer{{NamespaceSelector: labels("ns", "y")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !f.is("x/a") || to.ns == "y" },
		},
		{
			name: "egress to namespaceSelector and podSelector: x/a only to z/c on TCP 80",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "a-to-zc", npSpec{PodSelector: *labels("pod", "a"), PolicyTypes: types(egressType),
					Egress: []outRule{{To: []peer{{NamespaceSelector: labels("ns", "z"), PodSelector: labels("pod", "c")}}, Ports: []npPort{numPort(corev1.ProtocolTCP, 80)}}}})}
			},
			want: func(f, to *kpod, pp portProto) bool { return !f.is("x/a") || (to.is("z/c") && pp == tcp80) },
		},
		{
			name: "the client's egress denial wins over the server's allow-all ingress",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{
					netpol("x", "a-no-egress", npSpec{PodSelector: *labels("pod", "a"), PolicyTypes: types(egressType)}),
					netpol("y", "allow-all", npSpec{PodSelector: *all, Ingress: []inRule{{}}}),
				}
			},
			want: func(f, to *kpod, _ portProto) bool { return !f.is("x/a") },
		},
		{
			name: "ingress and egress in one policy: x/a from x/b, x/a to y/c",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "both", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{PodSelector: labels("pod", "b")}}}},
					Egress:  []outRule{{To: []peer{{NamespaceSelector: labels("ns", "y"), PodSelector: labels("pod", "c")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool {
				return (!to.is("x/a") || f.is("x/b")) && (!f.is("x/a") || to.is("y/c"))
			},
		},
		{
			name: "ipBlock ingress: x/a only from y/b's address",
			policies: func(m *netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "from-yb-ip", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{ipBlock(m.byKey["y/b"].ip + "/32")}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.is("y/b") },
		},
		{
			name: "ipBlock egress with except: x/a to the pool except z/c",
			policies: func(m *netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "pool-but-zc", npSpec{PodSelector: *labels("pod", "a"), PolicyTypes: types(egressType),
					Egress: []outRule{{To: []peer{ipBlock(m.l.Options().Pool, m.byKey["z/c"].ip+"/32")}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !f.is("x/a") || !to.is("z/c") },
		},
		{
			name: "an address in one ipBlock's except and in another peer's CIDR is allowed",
			policies: func(m *netpolModel) []*networkingv1.NetworkPolicy {
				zc := m.byKey["z/c"].ip + "/32"
				return []*networkingv1.NetworkPolicy{netpol("x", "except-and-allowed", npSpec{PodSelector: *labels("pod", "a"), PolicyTypes: types(egressType),
					Egress: []outRule{{To: []peer{ipBlock(m.l.Options().Pool, zc), ipBlock(zc)}}}})}
			},
			want: allowAll,
		},
		{
			name: "stacked policies add up: x/a from x/b, from namespace y, and from z/c on TCP 80",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				a := *labels("pod", "a")
				return []*networkingv1.NetworkPolicy{
					netpol("x", "from-b", npSpec{PodSelector: a, Ingress: []inRule{{From: []peer{{PodSelector: labels("pod", "b")}}}}}),
					netpol("x", "from-y", npSpec{PodSelector: a, Ingress: []inRule{{From: []peer{{NamespaceSelector: labels("ns", "y")}}}}}),
					netpol("x", "from-zc-80", npSpec{PodSelector: a, Ingress: []inRule{{From: []peer{{NamespaceSelector: labels("ns", "z"), PodSelector: labels("pod", "c")}},
						Ports: []npPort{numPort(corev1.ProtocolTCP, 80)}}}}),
				}
			},
			want: func(f, to *kpod, pp portProto) bool {
				return !to.is("x/a") || f.is("x/b") || f.ns == "y" || (f.is("z/c") && pp == tcp80)
			},
		},
		{
			name: "pod label change of a client: x/a from role=client pods of any namespace",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "from-clients", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: labels("role", "client")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") },
			steps: []netpolStep{
				{"y/b labelled role=client", func(ctx context.Context, m *netpolModel) {
					m.setPodLabels(ctx, "y/b", map[string]string{"role": "client"})
				}, func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.is("y/b") }},
				{"the label moves from y/b to z/a", func(ctx context.Context, m *netpolModel) {
					m.setPodLabels(ctx, "y/b", nil)
					m.setPodLabels(ctx, "z/a", map[string]string{"role": "client"})
				}, func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.is("z/a") }},
				{"z/a unlabelled", func(ctx context.Context, m *netpolModel) {
					m.setPodLabels(ctx, "z/a", nil)
				}, func(f, to *kpod, _ portProto) bool { return !to.is("x/a") }},
			},
		},
		{
			name: "pod label change of a target: pods of y with target=yes get a default deny",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("y", "deny-targets", npSpec{PodSelector: *labels("target", "yes"), PolicyTypes: types(ingressType)})}
			},
			want: allowAll,
			steps: []netpolStep{
				{"y/c labelled target=yes", func(ctx context.Context, m *netpolModel) {
					m.setPodLabels(ctx, "y/c", map[string]string{"target": "yes"})
				}, func(f, to *kpod, _ portProto) bool { return !to.is("y/c") }},
				{"y/c unlabelled", func(ctx context.Context, m *netpolModel) {
					m.setPodLabels(ctx, "y/c", nil)
				}, allowAll},
			},
		},
		{
			name: "namespace label change: pods of x from namespaces with team=blue",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "from-blue", npSpec{PodSelector: *all,
					Ingress: []inRule{{From: []peer{{NamespaceSelector: labels("team", "blue")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return to.ns != "x" },
			steps: []netpolStep{
				{"namespace y labelled team=blue", func(ctx context.Context, m *netpolModel) {
					m.setNamespaceLabels(ctx, "y", map[string]string{"team": "blue"})
				}, func(f, to *kpod, _ portProto) bool { return to.ns != "x" || f.ns == "y" }},
				{"the label moves from y to z", func(ctx context.Context, m *netpolModel) {
					m.setNamespaceLabels(ctx, "y", nil)
					m.setNamespaceLabels(ctx, "z", map[string]string{"team": "blue"})
				}, func(f, to *kpod, _ portProto) bool { return to.ns != "x" || f.ns == "z" }},
				{"z unlabelled", func(ctx context.Context, m *netpolModel) {
					m.setNamespaceLabels(ctx, "z", nil)
				}, func(f, to *kpod, _ portProto) bool { return to.ns != "x" }},
			},
		},
		{
			name: "an updated policy is enforced: x/a from x/b, then from x/c",
			policies: func(*netpolModel) []*networkingv1.NetworkPolicy {
				return []*networkingv1.NetworkPolicy{netpol("x", "updated", npSpec{PodSelector: *labels("pod", "a"),
					Ingress: []inRule{{From: []peer{{PodSelector: labels("pod", "b")}}}}})}
			},
			want: func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.is("x/b") },
			steps: []netpolStep{
				{"the policy now allows x/c", func(ctx context.Context, m *netpolModel) {
					np, err := m.kc.NetworkingV1().NetworkPolicies("x").Get(ctx, "updated", metav1.GetOptions{})
					if err != nil {
						m.t.Fatal(err)
					}
					np.Spec.Ingress[0].From[0].PodSelector = labels("pod", "c")
					if _, err := m.kc.NetworkingV1().NetworkPolicies("x").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
						m.t.Fatal(err)
					}
				}, func(f, to *kpod, _ portProto) bool { return !to.is("x/a") || f.is("x/c") }},
			},
		},
	}
}
