package kube

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/selector"
)

func np(name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name}, Spec: spec}
}

func proto(p corev1.Protocol) *corev1.Protocol { return &p }
func portNum(n int) *intstr.IntOrString        { v := intstr.FromInt32(int32(n)); return &v }
func portName(s string) *intstr.IntOrString    { v := intstr.FromString(s); return &v }
func i32(n int32) *int32                       { return &n }

// rulesJSON is the rules in a compact, comparable form.
func rulesJSON(t *testing.T, rules []datastore.Rule) string {
	t.Helper()
	b, err := json.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	// Empty entity rules are printed as {} (omitempty keeps structs).
	out := strings.ReplaceAll(string(b), `"source":{},`, "")
	return strings.ReplaceAll(strings.ReplaceAll(out, `,"destination":{}`, ""), `,"source":{}`, "")
}

// TestTranslatePolicy is the translation table: each NetworkPolicy shape
// of the upstream e2e suite and the Calyx Policy it becomes.
func TestTranslatePolicy(t *testing.T) {
	a := metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}
	cases := []struct {
		name      string
		np        *networkingv1.NetworkPolicy
		selector  string
		types     string
		ingress   string
		egress    string
		wantError string
	}{
		{name: "deny all ingress", np: np("deny", networkingv1.NetworkPolicySpec{}),
			selector: `calyx.dev/namespace == "x"`, types: "Ingress", ingress: "null", egress: "null"},
		{name: "allow all ingress", np: np("allow", networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}),
			selector: `calyx.dev/namespace == "x"`, types: "Ingress", ingress: `[{"action":"Allow"}]`, egress: "null"},
		{name: "egress inferred from rules", np: np("eg", networkingv1.NetworkPolicySpec{PodSelector: a, Egress: []networkingv1.NetworkPolicyEgressRule{{}}}),
			selector: `calyx.dev/namespace == "x" && pod == "a"`, types: "Ingress,Egress", ingress: "null", egress: `[{"action":"Allow"}]`},
		{name: "deny all egress only", np: np("deny-eg", networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}),
			selector: `calyx.dev/namespace == "x"`, types: "Egress", ingress: "null", egress: "null"},
		{name: "rules of an unlisted type are ignored", np: np("ig", networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}),
			selector: `calyx.dev/namespace == "x"`, types: "Egress", ingress: "null", egress: "null"},
		{name: "pod selector peer with expressions", np: np("expr", networkingv1.NetworkPolicySpec{PodSelector: a,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"c", "b"}},
					{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"db"}},
					{Key: "app", Operator: metav1.LabelSelectorOpExists},
					{Key: "legacy", Operator: metav1.LabelSelectorOpDoesNotExist},
				}}}}}}}),
			selector: `calyx.dev/namespace == "x" && pod == "a"`, types: "Ingress", egress: "null",
			ingress: `[{"action":"Allow","source":{"selector":"calyx.dev/namespace == \"x\" \u0026\u0026 pod in {\"b\", \"c\"} \u0026\u0026 tier not in {\"db\"} \u0026\u0026 has(app) \u0026\u0026 !has(legacy)"}}]`},
		{name: "namespace selector alone and with pod selector", np: np("ns", networkingv1.NetworkPolicySpec{PodSelector: a,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}},
				{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}},
			}}}}),
			selector: `calyx.dev/namespace == "x" && pod == "a"`, types: "Ingress", egress: "null",
			ingress: `[{"action":"Allow","source":{"selector":"has(calyx.dev/namespace) \u0026\u0026 pcns.ns == \"y\""}},` +
				`{"action":"Allow","source":{"selector":"has(calyx.dev/namespace) \u0026\u0026 pod == \"b\""}}]`},
		{name: "ipBlock with except", np: np("cidr", networkingv1.NetworkPolicySpec{PodSelector: a,
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: "10.244.0.0/16", Except: []string{"10.244.1.0/24"}}}}}}}),
			selector: `calyx.dev/namespace == "x" && pod == "a"`, types: "Ingress,Egress", ingress: "null",
			egress: `[{"action":"Allow","destination":{"nets":["10.244.0.0/16"],"notNets":["10.244.1.0/24"]}}]`},
		{name: "ports by number, range, name and protocol", np: np("ports", networkingv1.NetworkPolicySpec{PodSelector: a,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Port: portNum(80)},
				{Protocol: proto(corev1.ProtocolTCP), Port: portNum(8000), EndPort: i32(8080)},
				{Protocol: proto(corev1.ProtocolUDP), Port: portName("serve-81-udp")},
				{Protocol: proto(corev1.ProtocolSCTP), Port: portNum(81)},
			}}}}),
			selector: `calyx.dev/namespace == "x" && pod == "a"`, types: "Ingress", egress: "null",
			ingress: `[{"action":"Allow","protocol":"tcp","destination":{"ports":[80,"8000:8080"]}},` +
				`{"action":"Allow","protocol":"udp","destination":{"ports":["serve-81-udp"]}},` +
				`{"action":"Allow","protocol":"sctp","destination":{"ports":[81]}}]`},
		{name: "a protocol without a port opens it whole", np: np("whole", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Protocol: proto(corev1.ProtocolUDP), Port: portNum(53)}, {Protocol: proto(corev1.ProtocolUDP)}}}}}),
			selector: `calyx.dev/namespace == "x"`, types: "Ingress", egress: "null",
			ingress: `[{"action":"Allow","protocol":"udp"}]`},
		{name: "peers times protocols, egress named port on the peer", np: np("product", networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &a}, {IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/8"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: portName("http")}, {Protocol: proto(corev1.ProtocolUDP), Port: portNum(53)}},
			}}}),
			selector: `calyx.dev/namespace == "x"`, types: "Egress", ingress: "null",
			egress: `[{"action":"Allow","protocol":"tcp","destination":{"selector":"calyx.dev/namespace == \"x\" \u0026\u0026 pod == \"a\"","ports":["http"]}},` +
				`{"action":"Allow","protocol":"udp","destination":{"selector":"calyx.dev/namespace == \"x\" \u0026\u0026 pod == \"a\"","ports":[53]}},` +
				`{"action":"Allow","protocol":"tcp","destination":{"nets":["fd00::/8"],"ports":["http"]}},` +
				`{"action":"Allow","protocol":"udp","destination":{"nets":["fd00::/8"],"ports":[53]}}]`},
		{name: "endPort with a name is refused", np: np("bad", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: portName("http"), EndPort: i32(90)}}}}}),
			wantError: "endPort"},
		{name: "a bad CIDR is refused", np: np("badcidr", networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.1/33"}}}}}}),
			wantError: "10.0.0.1/33"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := TranslatePolicy(c.np)
			if c.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantError) {
					t.Fatalf("error = %v, want one naming %q", err, c.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Metadata.Name != "knp.x."+c.np.Name || !owned(p) || p.Spec.Order == nil || *p.Spec.Order != PolicyOrder {
				t.Errorf("metadata/order = %+v %v", p.Metadata, p.Spec.Order)
			}
			if p.Spec.Selector != c.selector {
				t.Errorf("selector = %s, want %s", p.Spec.Selector, c.selector)
			}
			var types []string
			for _, t := range p.Spec.Types {
				types = append(types, string(t))
			}
			if got := strings.Join(types, ","); got != c.types {
				t.Errorf("types = %s, want %s", got, c.types)
			}
			if got := rulesJSON(t, p.Spec.Ingress); got != c.ingress {
				t.Errorf("ingress =\n  %s\nwant\n  %s", got, c.ingress)
			}
			if got := rulesJSON(t, p.Spec.Egress); got != c.egress {
				t.Errorf("egress =\n  %s\nwant\n  %s", got, c.egress)
			}
		})
	}
}

// TestSelectorSemantics evaluates translated selectors against endpoint
// labels the way agents do: Kubernetes' label selector semantics hold,
// namespace labels come only from the profile, and pods cannot fake them.
func TestSelectorSemantics(t *testing.T) {
	nsX := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x", Labels: map[string]string{"ns": "x", "kubernetes.io/metadata.name": "x"}}}
	nsY := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "y", Labels: map[string]string{"ns": "y", "kubernetes.io/metadata.name": "y"}}}
	pod := func(ns *corev1.Namespace, name string, labels map[string]string) map[string]string {
		ep := EndpointOf(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: name, Labels: labels}})
		prof, _ := TranslateNamespace(ns)
		out := map[string]string{}
		for k, v := range ep.Labels {
			out[k] = v
		}
		for k, v := range prof.Spec.LabelsToApply {
			out[k] = v
		}
		return out
	}
	xa := pod(nsX, "a", map[string]string{"pod": "a"})
	xb := pod(nsX, "b", map[string]string{"pod": "b", "tier": "db"})
	ya := pod(nsY, "a", map[string]string{"pod": "a"})
	// A pod in y that claims to be in x and to carry x's namespace labels.
	liar := pod(nsY, "c", map[string]string{"pod": "c", "calyx.dev/namespace": "x", "pcns.ns": "x"})

	peers := map[string]networkingv1.NetworkPolicyPeer{
		"pods a of x":               {PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}},
		"namespace x":               {NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "x"}}},
		"namespace not in x":        {NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "ns", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"x"}}}}},
		"pods a of any namespace":   {NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}},
		"pods without tier":         {PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpDoesNotExist}}}},
		"namespace by its name y":   {NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "y"}}},
		"tier not db (absent ok)":   {PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"db"}}}}},
		"pods of x with a tier key": {PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}}},
	}
	want := map[string][4]bool{ // x/a, x/b, y/a, liar
		"pods a of x":               {true, false, false, false},
		"namespace x":               {true, true, false, false},
		"namespace not in x":        {false, false, true, true},
		"pods a of any namespace":   {true, false, true, false},
		"pods without tier":         {true, false, false, false},
		"namespace by its name y":   {false, false, true, true},
		"tier not db (absent ok)":   {true, false, false, false},
		"pods of x with a tier key": {false, true, false, false},
	}
	for name, peer := range peers {
		e, err := translatePeer("x", peer)
		if err != nil {
			t.Fatal(err)
		}
		sel, err := selector.Parse(e.Selector)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, labels := range []map[string]string{xa, xb, ya, liar} {
			if got := sel.Evaluate(labels); got != want[name][i] {
				t.Errorf("%s (%s) on endpoint %d (%v) = %v, want %v", name, e.Selector, i, labels, got, want[name][i])
			}
		}
	}
}

func TestPolicyNames(t *testing.T) {
	if got := PolicyName("x", "allow-a"); got != "knp.x.allow-a" {
		t.Errorf("PolicyName = %s", got)
	}
	long := strings.Repeat("n", 250)
	a, b := PolicyName("x", long), PolicyName("x", long+"m")
	if len(a) > 253 || a == b {
		t.Errorf("long names must be cut to 253 and stay distinct: %q %q", a, b)
	}
	if err := datastore.Validate(denyOnly(np(long, networkingv1.NetworkPolicySpec{}))); err != nil {
		t.Errorf("a cut name is not a valid Policy name: %v", err)
	}
}

func TestEndpointOf(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{
		"pod": "a", "calyx.dev/serviceaccount": "admin", "x.calyx.dev/k": "v", "pcns.ns": "kube-system"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
			{Name: "serve-80-tcp", ContainerPort: 80},
			{Name: "serve-81-udp", ContainerPort: 81, Protocol: corev1.ProtocolUDP},
			{ContainerPort: 82},
			{Name: "serve-80-tcp", ContainerPort: 8080},
		}}}}}
	ep := EndpointOf(pod)
	b, _ := json.Marshal(ep)
	want := `{"Labels":{"calyx.dev/namespace":"x","calyx.dev/orchestrator":"k8s","calyx.dev/pod":"a","calyx.dev/serviceaccount":"web","pod":"a"},` +
		`"Profiles":["kns.x"],"Ports":[{"name":"serve-80-tcp","protocol":"tcp","port":80},{"name":"serve-81-udp","protocol":"udp","port":81}]}`
	if string(b) != want {
		t.Errorf("EndpointOf =\n  %s\nwant\n  %s", b, want)
	}
}
