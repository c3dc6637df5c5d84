package cleanup

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/netnstest"
	"github.com/calyx-net/calyx/policy"
)

func TestSplitRule(t *testing.T) {
	cases := map[string][]string{
		`-A FORWARD -m comment --comment "cx:abc def" -j cx-FORWARD`: {"-A", "FORWARD", "-m", "comment", "--comment", "cx:abc def", "-j", "cx-FORWARD"},
		`-A INPUT -m comment --comment "say \"hi\" \\ " -j ACCEPT`:   {"-A", "INPUT", "-m", "comment", "--comment", `say "hi" \ `, "-j", "ACCEPT"},
		`-A X --comment "" -j Y`:                                     {"-A", "X", "--comment", "", "-j", "Y"},
	}
	for line, want := range cases {
		if got := splitRule(line); !slices.Equal(got, want) {
			t.Errorf("splitRule(%s) = %q, want %q", line, got, want)
		}
	}
	for line, want := range map[string]bool{
		`-A FORWARD -j cx-FORWARD`:                            true,
		`-A FORWARD -g cx-to-wl-dispatch`:                     true,
		`-A FORWARD -j cxfoo`:                                 false,
		`-A FORWARD -m comment --comment "-j cx-X" -j ACCEPT`: false,
		`-A OTHER -j cx-FORWARD`:                              false, // not the chain listed
		`-N cx-FORWARD`:                                       false,
	} {
		if _, got := jumpsToOurs(line, "FORWARD"); got != want {
			t.Errorf("jumpsToOurs(%s) = %v", line, got)
		}
	}
}

// TestCleanupOnlyOurs plants someone else's chains, rules, sets, routes
// and veths, then what the agent makes (its real policy dataplane plus
// hand-made routes and a workload veth), runs the real calyx-agent binary
// inside the namespace, and checks that the namespace is back to exactly
// the foreign state, for both IP versions, and that a second run removes
// nothing.
func TestCleanupOnlyOurs(t *testing.T) {
	requireRoot(t)
	bin := agentBinary(t)
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			if _, err := exec.LookPath("iptables-" + backend); err != nil {
				t.Skipf("no iptables-%s", backend)
			}
			testCleanupOnlyOurs(t, bin, backend)
		})
	}
}

func testCleanupOnlyOurs(t *testing.T, bin, backend string) {
	ns := newNS(t, "host")
	ns.backend = backend
	wl := newNS(t, "wl")
	socket := filepath.Join(t.TempDir(), "agent.sock")

	// Someone else's objects, in every table we may touch.
	for _, ipt := range ns.iptables() {
		ns.sh(t, ipt, "-N", "KUBE-FOO")
		ns.sh(t, ipt, "-A", "KUBE-FOO", "-j", "RETURN")
		ns.sh(t, ipt, "-A", "FORWARD", "-j", "KUBE-FOO")
		ns.sh(t, ipt, "-N", "cxfoo") // no dash: not ours
		ns.sh(t, ipt, "-A", "INPUT", "-j", "cxfoo")
		ns.sh(t, ipt, "-A", "INPUT", "-m", "comment", "--comment", "looks like -j cx-INPUT", "-j", "ACCEPT")
		for _, table := range []string{"raw", "mangle", "nat"} {
			ns.sh(t, ipt, "-t", table, "-N", "OTHER-"+table)
			ns.sh(t, ipt, "-t", table, "-A", "OUTPUT", "-j", "OTHER-"+table)
		}
	}
	ns.sh(t, "ipset", "create", "kube-set", "hash:ip")
	ns.sh(t, "ipset", "create", "cxset", "hash:net", "family", "inet6")
	ns.sh(t, ns.iptables()[0], "-A", "FORWARD", "-m", "set", "--match-set", "kube-set", "src", "-j", "DROP")
	// No duplicate address detection: link-local addresses (and their
	// routes) appear at once, not seconds into the test.
	for _, n := range []testNS{ns, wl} {
		n.sh(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	ns.sh(t, "ip", "link", "add", "eth-test", "type", "veth", "peer", "name", "eth-peer")
	ns.sh(t, "ip", "link", "add", "cxnothex1234", "type", "veth", "peer", "name", "cxnothex-peer")
	for _, l := range []string{"eth-test", "eth-peer", "cxnothex1234", "cxnothex-peer"} {
		ns.sh(t, "ip", "link", "set", l, "up")
	}
	ns.sh(t, "ip", "addr", "add", "198.18.0.1/24", "dev", "eth-test")
	ns.sh(t, "ip", "-6", "addr", "add", "fd00:18::1/64", "dev", "eth-test", "nodad")
	for _, r := range [][]string{
		{"10.50.0.0/24", "via", "198.18.0.2", "proto", "static"},
		{"10.51.0.0/24", "via", "198.18.0.2", "proto", "200"},
		{"10.53.0.0/24", "dev", "eth-test", "proto", "203"},
		{"blackhole", "10.52.0.0/24"},
		{"10.54.0.0/24", "via", "198.18.0.2", "table", "100", "proto", "static"},
	} {
		ns.sh(t, append([]string{"ip", "route", "add"}, r...)...)
	}
	ns.sh(t, "ip", "-6", "route", "add", "2001:db8:2::/64", "via", "fd00:18::2", "proto", "static")
	foreign := ns.snapshot(t)

	// What the agent makes: chains, hooks and sets from the real policy
	// dataplane (IPv4 and IPv6), a chain in mangle, routes of both of our
	// protocols in two tables, a workload veth whose other end is in the
	// workload's namespace.
	ns.sh(t, "ip", "link", "add", "cx0123456789a", "type", "veth", "peer", "name", "eth0", "netns", wl.Name)
	ns.sh(t, "ip", "link", "set", "cx0123456789a", "up")
	dp, err := policy.New(policy.Config{NodeName: "node-a", IPv6: true, Backend: policy.Backend(backend), CommandPrefix: []string{"ip", "netns", "exec", ns.Name}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*datastore.WorkloadEndpoint{
		{Metadata: datastore.Metadata{Name: "web", Labels: map[string]string{"app": "web"}},
			Spec: datastore.WorkloadEndpointSpec{Node: "node-a", InterfaceName: "cx0123456789a", IPNetworks: []string{"10.244.0.2/32", "fd00:244::2/128"}}},
		{Metadata: datastore.Metadata{Name: "db", Labels: map[string]string{"app": "db"}},
			Spec: datastore.WorkloadEndpointSpec{Node: "node-a", InterfaceName: "cxdb", IPNetworks: []string{"10.244.0.3/32", "fd00:244::3/128"}}},
	} {
		if err := dp.SetEndpoint(w); err != nil {
			t.Fatal(err)
		}
	}
	order := 100.0
	if err := dp.SetPolicy(&datastore.Policy{Metadata: datastore.Metadata{Name: "db-ingress"},
		Spec: datastore.PolicySpec{Order: &order, Selector: `app == "db"`, Ingress: []datastore.Rule{{Action: datastore.ActionAllow,
			Source: datastore.EntityRule{Selector: `app == "web"`}}}}}); err != nil {
		t.Fatal(err)
	}
	if err := dp.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, ipt := range ns.iptables() {
		ns.sh(t, ipt, "-t", "mangle", "-N", "cx-extra")
		ns.sh(t, ipt, "-t", "mangle", "-A", "cx-extra", "-j", "RETURN")
		ns.sh(t, ipt, "-t", "mangle", "-A", "PREROUTING", "-m", "comment", "--comment", "cx: old hook", "-j", "cx-extra")
	}
	for _, r := range [][]string{
		{"10.244.0.2/32", "dev", "cx0123456789a", "proto", "201"},
		{"blackhole", "10.244.0.0/26", "proto", "201"},
		{"10.244.1.0/26", "via", "198.18.0.2", "proto", "202"},
		{"10.244.2.0/26", "proto", "202", "nexthop", "via", "198.18.0.2", "nexthop", "via", "198.18.0.3"},
		{"10.244.3.0/26", "via", "198.18.0.2", "proto", "202", "table", "100"},
		{"-6", "fd00:244::2/128", "dev", "cx0123456789a", "proto", "201"},
		{"-6", "blackhole", "fd00:244::/122", "proto", "201"},
		{"-6", "fd00:244:1::/122", "via", "fd00:18::2", "proto", "202"},
	} {
		args := []string{"ip"}
		if r[0] == "-6" {
			args, r = append(args, "-6"), r[1:]
		}
		ns.sh(t, append(append(args, "route", "add"), r...)...)
	}
	planted := ns.snapshot(t)
	for _, want := range []string{"cx-FORWARD", "cx-extra", "cx-pools-all", "cx-pools6-all", "proto 201", "proto 202", "cx0123456789a"} {
		if !strings.Contains(planted.all(), want) {
			t.Fatalf("the planted state has no %s:\n%s", want, planted.all())
		}
	}

	// A dry run lists and changes nothing.
	out := ns.agent(t, bin, 0, "cleanup", "--dry-run", "--iptables-backend", backend, "--agent-socket", socket)
	if !strings.Contains(out, "would remove route 10.244.1.0/26 proto 202") || !strings.Contains(out, "would remove ipset cx-pools6-all") {
		t.Errorf("dry run output:\n%s", out)
	}
	if got := ns.snapshot(t); got.all() != planted.all() {
		t.Errorf("a dry run changed the namespace:\n%s", diff(planted.all(), got.all()))
	}

	// Refused while an agent answers on the socket.
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	out = ns.agent(t, bin, 1, "cleanup", "--agent-socket", socket)
	l.Close()
	if !strings.Contains(out, "running") {
		t.Errorf("with an agent answering: %s", out)
	}

	// Without --workloads: everything but the veth.
	for run := 1; run <= 2; run++ {
		out = ns.agent(t, bin, 0, "cleanup", "--iptables-backend", backend, "--agent-socket", socket)
		t.Logf("run %d:\n%s", run, out)
		got := ns.snapshot(t)
		if got.iptables != foreign.iptables || got.ipsets != foreign.ipsets || got.routes4 != foreign.routes4 {
			t.Errorf("run %d: not back to the foreign state:\n%s\noutput:\n%s", run, diff(foreign.all(), got.all()), out)
		}
		if !strings.Contains(got.links, "cx0123456789a") {
			t.Errorf("run %d: the workload veth went without --workloads", run)
		}
		if run == 2 && !strings.Contains(out, "removed 0 routes, 0 interfaces, 0 iptables rules, 0 chains, 0 ipsets") {
			t.Errorf("second run removed something:\n%s", out)
		}
	}
	// With --workloads: the veth too, and nothing left of ours.
	for run := 1; run <= 2; run++ {
		out = ns.agent(t, bin, 0, "cleanup", "--workloads", "--iptables-backend", backend, "--agent-socket", socket)
		if got := ns.snapshot(t); got.all() != foreign.all() {
			t.Errorf("--workloads run %d: not back to the foreign state:\n%s\noutput:\n%s", run, diff(foreign.all(), got.all()), out)
		}
	}
	if out := wl.sh(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("the workload end of the veth survived: %s", out)
	}
}

// snapshot is the state of a namespace as text, one part per kind.
type snapshot struct {
	iptables, ipsets, routes4, routes6, links string
}

func (s snapshot) all() string {
	return strings.Join([]string{s.iptables, s.ipsets, s.routes4, s.routes6, s.links}, "\n")
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func (n testNS) snapshot(t *testing.T) snapshot {
	t.Helper()
	var ipt []string
	for _, bin := range n.iptables() {
		save := bin + "-save"
		for _, line := range strings.Split(n.sh(t, save), "\n") {
			if !strings.HasPrefix(line, "#") {
				ipt = append(ipt, save+" "+counters.ReplaceAllString(line, ""))
			}
		}
	}
	sorted := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	var links []string
	for _, line := range strings.Split(n.sh(t, "ip", "-o", "link"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			links = append(links, f[1])
		}
	}
	slices.Sort(links)
	return snapshot{
		iptables: strings.Join(ipt, "\n"),
		ipsets:   sorted(n.sh(t, "ipset", "list", "-n")),
		routes4:  sorted(n.sh(t, "ip", "-4", "route", "show", "table", "all")),
		routes6:  sorted(n.sh(t, "ip", "-6", "route", "show", "table", "all")),
		links:    strings.Join(links, " "),
	}
}

// diff lists the lines only in want (-) and only in got (+).
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for _, l := range w {
		if !slices.Contains(g, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// testNS is a throw-away namespace and the iptables backend the test
// plants with.
type testNS struct {
	netnstest.NS
	backend string
}

// iptables names the iptables and ip6tables of the namespace's backend.
func (n testNS) iptables() []string {
	return []string{"iptables-" + n.backend, "ip6tables-" + n.backend}
}

func requireRoot(t *testing.T) {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, tool := range []string{"iptables", "ip6tables", "ipset"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
}

func newNS(t *testing.T, tag string) testNS {
	t.Helper()
	// ipsets live in the namespace and go with it.
	return testNS{NS: netnstest.New(t, "cleanup-"+tag)}
}

func (n testNS) sh(t *testing.T, argv ...string) string {
	t.Helper()
	return n.MustRun(t, argv...)
}

// agent runs the calyx-agent binary in the namespace and checks its exit
// status; it returns stdout and stderr together.
func (n testNS) agent(t *testing.T, bin string, wantCode int, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, bin}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != wantCode {
		t.Fatalf("calyx-agent %s: exit %d, want %d:\n%s", strings.Join(args, " "), code, wantCode, out)
	}
	return string(out)
}

// agentBinary is bin/calyx-agent from CALYX_BIN_DIR (make test sets it)
// or a fresh build.
func agentBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("CALYX_BIN_DIR"); dir != "" {
		if p := filepath.Join(dir, "calyx-agent"); fileExists(p) {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "calyx-agent")
	out, err := exec.Command("go", "build", "-o", p, "github.com/calyx-net/calyx/cmd/calyx-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("building calyx-agent: %v: %s", err, out)
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
