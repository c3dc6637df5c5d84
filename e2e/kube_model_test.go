package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/kubeapi"
)

// The Kubernetes suites reproduce the model of the upstream NetworkPolicy
// e2e tests (kubernetes test/e2e/network/netpol): namespaces x, y and z
// (label ns=<name>), pods a, b and c in each (label pod=<name>), each
// serving ports 80 and 81 over TCP and UDP with the named container ports
// serve-80-tcp ... serve-81-udp; after each policy every pod probes every
// other pod on every port and protocol, and the whole truth table must
// match what the policy says. SCTP has no sockets in this kernel (no
// sctp module); its policy rules are still checked to isolate.

// upKubeLab is a Kubernetes lab (real kube-apiserver, controllers, agents
// with a kubeconfig) for the test; it skips without the API server.
func upKubeLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	if _, err := kubeapi.Binary(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	o.Kubernetes = true
	if o.AgentLogLevel == "" {
		o.AgentLogLevel = "info"
	}
	l := upLab(t, o)
	t.Cleanup(func() {
		if t.Failed() {
			dumpKubeLogs(t, l)
		}
	})
	return l
}

func dumpKubeLogs(t *testing.T, l *lab.Lab) {
	for _, p := range l.Processes() {
		if !strings.HasPrefix(p.Name, "kube-") {
			continue
		}
		t.Logf("---- %s (tail of %s)\n%s", p.Name, p.Log, tailOf(p.Log, 30))
	}
}

func tailOf(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// portProto is one port a pod serves.
type portProto struct {
	port  int
	proto corev1.Protocol
}

func (p portProto) String() string { return fmt.Sprintf("%s/%d", p.proto, p.port) }

// name is the upstream named port: serve-80-tcp.
func (p portProto) name() string {
	return fmt.Sprintf("serve-%d-%s", p.port, strings.ToLower(string(p.proto)))
}

var (
	tcp80, tcp81 = portProto{80, corev1.ProtocolTCP}, portProto{81, corev1.ProtocolTCP}
	udp80, udp81 = portProto{80, corev1.ProtocolUDP}, portProto{81, corev1.ProtocolUDP}
	probePorts   = []portProto{tcp80, tcp81, udp80, udp81}
)

// kpod is one pod of the model.
type kpod struct {
	ns, name string
	workload string
	ip       string
}

func (p *kpod) String() string { return p.ns + "/" + p.name }

// is reports whether the pod is "ns/name".
func (p *kpod) is(key string) bool { return p.String() == key }

// netpolModel is the lab, the pods, their servers and the prober.
type netpolModel struct {
	t       *testing.T
	l       *lab.Lab
	kc      kubernetes.Interface
	pods    []*kpod
	byKey   map[string]*kpod
	closers []io.Closer
	// timeout is how long a probe waits for an answer.
	timeout time.Duration
}

var (
	modelNamespaces = []string{"x", "y", "z"}
	modelPods       = []string{"a", "b", "c"}
)

// newNetpolModel makes the namespaces and the nine pods (spread over the
// lab's hosts, so that pairs are on one host and across hosts), and
// starts their servers.
func newNetpolModel(ctx context.Context, t *testing.T, l *lab.Lab) *netpolModel {
	t.Helper()
	kc, err := l.KubeClient()
	if err != nil {
		t.Fatal(err)
	}
	m := &netpolModel{t: t, l: l, kc: kc, byKey: map[string]*kpod{}, timeout: 400 * time.Millisecond}
	t.Cleanup(func() {
		for _, c := range m.closers {
			c.Close()
		}
	})
	for _, ns := range modelNamespaces {
		_, err := kc.CoreV1().Namespaces().Create(ctx, nsObject(ns), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	var ports []corev1.ContainerPort
	for _, pp := range probePorts {
		ports = append(ports, corev1.ContainerPort{Name: pp.name(), ContainerPort: int32(pp.port), Protocol: pp.proto})
	}
	ports = append(ports, corev1.ContainerPort{Name: "serve-80-sctp", ContainerPort: 80, Protocol: corev1.ProtocolSCTP})
	hosts := l.Hosts()
	i := 0
	for _, ns := range modelNamespaces {
		for _, name := range modelPods {
			h := hosts[i%len(hosts)].Name
			i++
			w, err := l.AddPod(ctx, lab.Pod{Namespace: ns, Name: name, Host: h, Labels: map[string]string{"pod": name}, Ports: ports})
			if err != nil {
				t.Fatal(err)
			}
			p := &kpod{ns: ns, name: name, workload: w.Name, ip: w.IP()}
			m.pods = append(m.pods, p)
			m.byKey[p.String()] = p
			m.serve(p)
		}
	}
	return m
}

// serve runs the pod's servers in its namespace: TCP accepts and closes,
// UDP echoes.
func (m *netpolModel) serve(p *kpod) {
	for _, pp := range probePorts {
		addr := ":" + strconv.Itoa(pp.port)
		if pp.proto == corev1.ProtocolTCP {
			ln, err := m.l.Listen(p.workload, addr)
			if err != nil {
				m.t.Fatal(err)
			}
			m.closers = append(m.closers, ln)
			lab.DiscardConns(ln)
			continue
		}
		pc, err := m.l.ListenUDP(p.workload, addr)
		if err != nil {
			m.t.Fatal(err)
		}
		m.closers = append(m.closers, pc)
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}()
	}
}

// probe reports whether from reaches to on pp: a TCP connection, or a UDP
// datagram echoed back, within the timeout.
func (m *netpolModel) probe(ctx context.Context, from, to *kpod, pp portProto) bool {
	addr := net.JoinHostPort(to.ip, strconv.Itoa(pp.port))
	if pp.proto == corev1.ProtocolTCP {
		dctx, cancel := context.WithTimeout(ctx, m.timeout)
		defer cancel()
		c, err := m.l.Dial(dctx, from.workload, addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	c, err := m.l.DialUDP(from.workload, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(m.timeout))
	if _, err := c.Write([]byte("probe")); err != nil {
		return false
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "probe"
}

// cell is one entry of a truth table.
type cell struct {
	from, to *kpod
	pp       portProto
}

// truthTable is who reaches whom on each port.
type truthTable map[cell]bool

// probeAll probes every pair of distinct pods on every port, all at once.
func (m *netpolModel) probeAll(ctx context.Context) truthTable {
	var mu sync.Mutex
	var wg sync.WaitGroup
	got := truthTable{}
	sem := make(chan struct{}, 160)
	for _, f := range m.pods {
		for _, to := range m.pods {
			if f == to {
				continue // a pod's traffic to itself never leaves it
			}
			for _, pp := range probePorts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					ok := m.probe(ctx, f, to, pp)
					<-sem
					mu.Lock()
					got[cell{f, to, pp}] = ok
					mu.Unlock()
				}()
			}
		}
	}
	wg.Wait()
	return got
}

// reach is a policy's expected reachability.
type reach func(from, to *kpod, pp portProto) bool

func allowAll(_, _ *kpod, _ portProto) bool { return true }

// expect probes until the truth table matches want in two rounds in a row
// (the first after every expected denial is seen, so that a policy not
// yet enforced is never taken for a match), or fails with the tables.
func (m *netpolModel) expect(ctx context.Context, what string, want reach) {
	m.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	matched, rounds := 0, 0
	for {
		got := m.probeAll(ctx)
		rounds++
		wrong := m.mismatches(got, want)
		if len(wrong) == 0 {
			matched++
			if matched == 2 {
				return
			}
			continue
		}
		matched = 0
		if time.Now().After(deadline) || ctx.Err() != nil {
			m.t.Errorf("%s: the truth table does not match after %d rounds; %d of %d probes wrong:\n%s", what, rounds, len(wrong), len(got), m.render(got, want))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *netpolModel) mismatches(got truthTable, want reach) []cell {
	var out []cell
	for c, ok := range got {
		if ok != want(c.from, c.to, c.pp) {
			out = append(out, c)
		}
	}
	return out
}

// render prints one table per port as upstream does: rows are clients,
// columns servers; "." reaches as expected, "X" is blocked as expected,
// "!" reaches but should not, "?" is blocked but should reach.
func (m *netpolModel) render(got truthTable, want reach) string {
	var b strings.Builder
	for _, pp := range probePorts {
		fmt.Fprintf(&b, "%-6s", pp)
		for _, to := range m.pods {
			fmt.Fprintf(&b, " %s", to)
		}
		b.WriteString("\n")
		for _, f := range m.pods {
			fmt.Fprintf(&b, "%-6s", f)
			for _, to := range m.pods {
				c := "-"
				if f != to {
					ok, w := got[cell{f, to, pp}], want(f, to, pp)
					c = map[[2]bool]string{{true, true}: ".", {false, false}: "X", {true, false}: "!", {false, true}: "?"}[[2]bool{ok, w}]
				}
				fmt.Fprintf(&b, " %3s", c)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// apply creates the policies.
func (m *netpolModel) apply(ctx context.Context, nps ...*networkingv1.NetworkPolicy) {
	m.t.Helper()
	for _, np := range nps {
		if _, err := m.kc.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			m.t.Fatalf("creating NetworkPolicy %s/%s: %v", np.Namespace, np.Name, err)
		}
	}
}

// reset deletes every policy and waits until everything reaches
// everything again: deleting a NetworkPolicy stops its enforcement.
func (m *netpolModel) reset(ctx context.Context) {
	m.t.Helper()
	for _, ns := range modelNamespaces {
		if err := m.kc.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			m.t.Fatal(err)
		}
	}
	m.expect(ctx, "every policy deleted", allowAll)
}

// setPodLabels replaces a pod's labels (pod=<name> stays).
func (m *netpolModel) setPodLabels(ctx context.Context, key string, extra map[string]string) {
	m.t.Helper()
	p := m.byKey[key]
	pod, err := m.kc.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		m.t.Fatal(err)
	}
	pod.Labels = map[string]string{"pod": p.name}
	for k, v := range extra {
		pod.Labels[k] = v
	}
	if _, err := m.kc.CoreV1().Pods(p.ns).Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		m.t.Fatal(err)
	}
}

// setNamespaceLabels replaces a namespace's labels (ns=<name> stays).
func (m *netpolModel) setNamespaceLabels(ctx context.Context, name string, extra map[string]string) {
	m.t.Helper()
	ns, err := m.kc.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		m.t.Fatal(err)
	}
	labels := map[string]string{"ns": name, "kubernetes.io/metadata.name": name}
	for k, v := range extra {
		labels[k] = v
	}
	ns.Labels = labels
	if _, err := m.kc.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		m.t.Fatal(err)
	}
}

// nsObject is namespace name with the model's label ns=<name>.
func nsObject(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"ns": name}}}
}

// ---- NetworkPolicy builders -------------------------------------------------

func netpol(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

// labels is a matchLabels selector of key, value pairs.
func labels(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func types(ts ...networkingv1.PolicyType) []networkingv1.PolicyType { return ts }

var (
	ingressType = networkingv1.PolicyTypeIngress
	egressType  = networkingv1.PolicyTypeEgress
)

func numPort(proto corev1.Protocol, port int32, end ...int32) networkingv1.NetworkPolicyPort {
	p := networkingv1.NetworkPolicyPort{Protocol: &proto}
	v := intstr.FromInt32(port)
	p.Port = &v
	if len(end) > 0 {
		p.EndPort = &end[0]
	}
	return p
}

func protoOnly(proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto}
}

func namedPort(name string, proto ...corev1.Protocol) networkingv1.NetworkPolicyPort {
	v := intstr.FromString(name)
	p := networkingv1.NetworkPolicyPort{Port: &v}
	if len(proto) > 0 {
		p.Protocol = &proto[0]
	}
	return p
}

func ipBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// in reports whether the pod is one of keys ("x/a").
func in(p *kpod, keys ...string) bool { return slices.Contains(keys, p.String()) }

var errSCTP = errors.New("SCTP: this kernel has no SCTP sockets (CONFIG_IP_SCTP is not set), so SCTP traffic is not probed; SCTP rules are still checked to isolate for TCP and UDP")
