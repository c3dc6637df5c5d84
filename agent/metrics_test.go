package agent_test

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/calyx-net/calyx/internal/testutil"
	"github.com/calyx-net/calyx/routes/netns"
)

// scrape is one read of the agent's /metrics.
type scrape struct {
	text     []byte
	families map[string]*dto.MetricFamily
}

// metrics scrapes the agent's /metrics on the loopback of its namespace.
func (h *host) metrics() scrape {
	h.t.Helper()
	nsPath := h.nsPath()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := netns.Do(nsPath, func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := c.Get("http://127.0.0.1:9091/metrics")
	if err != nil {
		h.t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		h.t.Fatalf("parsing /metrics: %v\n%s", err, text)
	}
	return scrape{text: text, families: fams}
}

// value is the sample of name whose labels include want; for a histogram
// the observation count. NaN when there is none.
func (s scrape) value(name string, want ...string) float64 {
	f := s.families[name]
	if f == nil {
		return math.NaN()
	}
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return math.NaN()
}

// TestMetricsMoveWithAWorkload runs the real agent, adds a workload through
// the real plugin, and checks that the series operators alert on move:
// CNI requests, datastore events, dataplane applies, routes, IPAM use,
// ipset members, iptables-restore runs; that a BGP session shows up with
// its state; that promtool (and promlint) find nothing wrong with the
// exposition; and that the shipped dashboard and alert rules only name
// series the agent exports.
func TestMetricsMoveWithAWorkload(t *testing.T) {
	h := newHost(t, hostOptions{})
	before := h.metrics()
	w := h.newWorkload("met")
	h.add(w)
	var after scrape
	testutil.Eventually(t, 10*time.Second, "metrics to show the workload", testutil.Holds(func() bool {
		after = h.metrics()
		return after.value("calyx_local_endpoints") == 1 && after.value("calyx_routes", "table", "workload") > before.value("calyx_routes", "table", "workload")
	}))

	moved := []struct {
		name   string
		labels []string
		min    float64 // the least it must have grown by
	}{
		{"calyx_cni_requests_total", []string{"verb", "add", "result", "ok"}, 1},
		{"calyx_cni_request_duration_seconds", []string{"verb", "add"}, 1},
		{"calyx_datastore_events_total", []string{"kind", "WorkloadEndpoint"}, 1},
		{"calyx_datastore_events_total", []string{"kind", "IPAMBlock"}, 1},
		{"calyx_dataplane_apply_seconds", []string{"part", "routes"}, 1},
		{"calyx_dataplane_apply_seconds", []string{"part", "policy"}, 1},
		{"calyx_routes", []string{"table", "workload"}, 1},
		{"calyx_route_writes_total", nil, 1},
		{"calyx_ipam_addresses_in_use", []string{"pool", "pool1"}, 1},
		{"calyx_ipset_members", nil, 1},
		// An open endpoint changes set members only: no chain to write.
		{"calyx_iptables_restore_total", []string{"family", "ipv4", "result", "ok"}, 0},
	}
	for _, m := range moved {
		b, a := before.value(m.name, m.labels...), after.value(m.name, m.labels...)
		if math.IsNaN(b) {
			b = 0
		}
		if math.IsNaN(a) || a-b < m.min {
			t.Errorf("%s%v: %v before the workload, %v after; want it up by %v", m.name, m.labels, b, a, m.min)
		}
	}
	for name, want := range map[string]float64{
		"calyx_ipam_blocks":          1,
		"calyx_ipam_block_addresses": 64, // one /26
		"calyx_ipam_pool_addresses":  65536,
		"calyx_datastore_in_sync":    1,
		"calyx_policy_ready":         1,
	} {
		if got := after.value(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := after.value("calyx_build_info"); got != 1 || !bytes.Contains(after.text, []byte(`calyx_build_info{commit="`)) {
		t.Errorf("calyx_build_info %v:\n%s", got, grepLines(after.text, "calyx_build_info"))
	}
	for _, state := range []string{"idle", "connect", "active", "opensent", "openconfirm", "established"} {
		if math.IsNaN(after.value("calyx_bgp_sessions", "state", state)) {
			t.Errorf("calyx_bgp_sessions{state=%q} missing", state)
		}
	}
	if t.Failed() {
		t.Logf("metrics after the workload:\n%s", grepLines(after.text, "calyx_"))
	}

	// A peer that does not answer: one session, not established.
	peer := "apiVersion: calyx.dev/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: " + fabricIP + ", asNumber: 65000}\n"
	if out, err := h.calyxctl(peer, "apply", "-f", "-"); err != nil {
		t.Fatalf("calyxctl apply: %v\n%s", err, out)
	}
	testutil.Eventually(t, 10*time.Second, "the BGP session in the metrics", testutil.Holds(func() bool {
		after = h.metrics()
		total := 0.0
		for _, f := range after.families["calyx_bgp_sessions"].GetMetric() {
			total += f.GetGauge().GetValue()
		}
		return total == 1 && after.value("calyx_bgp_peer_up", "peer", fabricIP, "type", "external") == 0 &&
			after.value("calyx_bgp_sessions", "state", "established") == 0
	}))
	if got := after.value("calyx_bgp_prefixes_received", "peer", fabricIP); got != 0 {
		t.Errorf("calyx_bgp_prefixes_received{peer=%s} = %v", fabricIP, got)
	}

	// A policy selecting the workload: its chains are written by
	// iptables-restore.
	prev := after
	pol := "apiVersion: calyx.dev/v1\nkind: Policy\nmetadata: {name: deny-all}\nspec: {selector: all(), types: [Ingress]}\n"
	if out, err := h.calyxctl(pol, "apply", "-f", "-"); err != nil {
		t.Fatalf("calyxctl apply: %v\n%s", err, out)
	}
	testutil.Eventually(t, 10*time.Second, "the policy's chains in the metrics", testutil.Holds(func() bool {
		after = h.metrics()
		return after.value("calyx_iptables_restore_total", "family", "ipv4", "result", "ok") > prev.value("calyx_iptables_restore_total", "family", "ipv4", "result", "ok") &&
			after.value("calyx_policy_chains_written_total") > prev.value("calyx_policy_chains_written_total") &&
			after.value("calyx_dataplane_apply_seconds", "part", "policy") > prev.value("calyx_dataplane_apply_seconds", "part", "policy") &&
			after.value("calyx_datastore_events_total", "kind", "Policy") > prev.value("calyx_datastore_events_total", "kind", "Policy")
	}))
	if got := after.value("calyx_iptables_restore_total", "family", "ipv4", "result", "error"); got != 0 {
		t.Errorf("iptables-restore errors: %v", got)
	}

	lintMetrics(t, after.text)
	checkMonitoringNames(t, after)
}

// lintMetrics runs promtool check metrics (when installed: make test
// fetches it) and promlint, the same linter as a library, over an
// exposition: both must find nothing.
func lintMetrics(t *testing.T, text []byte) {
	t.Helper()
	if promtool := promtoolPath(); promtool != "" {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed (make test fetches it); promlint only")
	}
	problems, err := promlint.New(bytes.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func promtoolPath() string {
	if p := os.Getenv("PROMTOOL"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, _ := exec.LookPath("promtool")
	return p
}

var seriesName = regexp.MustCompile(`\bcalyx_[a-z0-9_]+`)

// checkMonitoringNames reads the shipped dashboard and alert rules and
// fails on any calyx_ series the agent does not export (a histogram's
// _bucket, _sum and _count count as its own). Series of
// calyx-kube-controllers (calyx_kube_) are checked where they are made.
func checkMonitoringNames(t *testing.T, s scrape) {
	t.Helper()
	files, _ := filepath.Glob("../deploy/monitoring/*")
	if len(files) == 0 {
		t.Fatal("no files in deploy/monitoring")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, name := range seriesName.FindAllString(string(b), -1) {
			if strings.HasPrefix(name, "calyx_kube_") || seen[name] {
				continue
			}
			seen[name] = true
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if trimmed, ok := strings.CutSuffix(name, suffix); ok && s.families[trimmed].GetType() == dto.MetricType_HISTOGRAM {
					base = trimmed
				}
			}
			if s.families[base] == nil {
				t.Errorf("%s names %s, which the agent does not export", filepath.Base(f), name)
			}
		}
	}
}

func grepLines(text []byte, prefix string) string {
	var out []string
	for _, l := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
