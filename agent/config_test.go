package agent

import (
	"bytes"
	"encoding/json"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/policy"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Precedence: flag > env > file > default, for scalars and lists; every
// value arrives typed.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(file, []byte("node-name: from-file\nbgp-port: 1179\nlog-level: warn\netcd-endpoints: [http://file:2379]\nresync-interval: 30s\nnode-ip: 198.18.0.9\n"), 0o600)

	c, err := LoadConfig([]string{"--config", file, "--node-name", "from-flag"}, env(map[string]string{
		"CALYX_NODE_NAME": "from-env", "CALYX_BGP_PORT": "2179",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "from-flag" {
		t.Errorf("flag must beat env and file: %q", c.NodeName)
	}
	if c.BGPPort != 2179 {
		t.Errorf("env must beat file: %d", c.BGPPort)
	}
	if c.LogLevel != slog.LevelWarn || c.ResyncInterval != 30*time.Second || len(c.EtcdEndpoints) != 1 || c.EtcdEndpoints[0] != "http://file:2379" {
		t.Errorf("file must beat default: %+v", c)
	}
	if c.NodeIP != netip.MustParseAddr("198.18.0.9") || c.NodeIPv6.IsValid() {
		t.Errorf("addresses: %v %v", c.NodeIP, c.NodeIPv6)
	}
	if c.AgentSocket != "/var/run/calyx/agent.sock" || c.HealthAddr != "127.0.0.1:9099" || c.LogFormat != LogText || c.IptablesBackend != policy.BackendDefault {
		t.Errorf("defaults: %+v", c)
	}
	if len(c.FailsafePorts) != 6 || c.FailsafePorts[0] != (policy.ProtoPort{Protocol: "tcp", Port: 22}) {
		t.Errorf("default failsafe ports: %v", c.FailsafePorts)
	}
	// An env list replaces the default list; a flag given twice appends.
	c, err = LoadConfig([]string{"--embedded-etcd", "/tmp/x", "--etcd-endpoints", "a:1", "--etcd-endpoints", "b:2,c:3"}, env(map[string]string{"CALYX_FAILSAFE_PORTS": "tcp:22, udp:53"}))
	if err != nil {
		t.Fatal(err)
	}
	if want := []policy.ProtoPort{{Protocol: "tcp", Port: 22}, {Protocol: "udp", Port: 53}}; len(c.FailsafePorts) != 2 || c.FailsafePorts[0] != want[0] || c.FailsafePorts[1] != want[1] {
		t.Errorf("env list: %v", c.FailsafePorts)
	}
	if strings.Join(c.EtcdEndpoints, " ") != "a:1 b:2 c:3" {
		t.Errorf("repeated list flag: %v", c.EtcdEndpoints)
	}
	// An empty list is empty, not the default.
	c, err = LoadConfig([]string{"--embedded-etcd", "/tmp/x", "--failsafe-ports", "", "--iptables-backend", "NFT", "--log-format", "json"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.FailsafePorts == nil || len(c.FailsafePorts) != 0 || c.IptablesBackend != policy.BackendNFT || c.LogFormat != LogJSON {
		t.Errorf("empty list, enums: %+v", c)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("node-nme: x\n"), 0o600)
	badValue := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badValue, []byte("embedded-etcd: /x\nresync-interval: 30\n"), 0o600)
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--config", typo}, nil, "unknown settings node-nme"},
		{[]string{"--config", badValue}, nil, badValue + `: resync-interval: invalid value "30": not a duration`},
		{[]string{}, map[string]string{"CALYX_BGP_PORT": "abc"}, `CALYX_BGP_PORT: invalid value "abc": not a port`},
		{[]string{"--embedded-etcd", "/x", "--node-ip", "fd00::1"}, nil, `--node-ip: invalid value "fd00::1": not an IPv4 address`},
		{[]string{"--embedded-etcd", "/x", "--node-ipv6", "10.0.0.1"}, nil, `--node-ipv6: invalid value "10.0.0.1": not an IPv6 address`},
		{[]string{"--node-name", "h"}, nil, "no datastore"},
		{[]string{"--embedded-etcd", "/x", "--log-level", "loud"}, nil, `--log-level: invalid value "loud"`},
		{[]string{"--embedded-etcd", "/x", "--log-format", "xml"}, nil, `--log-format: invalid value "xml": not one of text, json`},
		{[]string{"--embedded-etcd", "/x", "--failsafe-ports", "icmp:1"}, nil, "protocol must be tcp or udp"},
		{[]string{"--embedded-etcd", "/x", "--failsafe-ports", "tcp:70000"}, nil, `--failsafe-ports: invalid value "tcp:70000": "tcp:70000": port must be 1-65535`},
		{[]string{"--embedded-etcd", "/x", "--health-addr", "nocolon"}, nil, `--health-addr: invalid value "nocolon"`},
		{[]string{"--embedded-etcd", "/x", "--resync-interval", "10ms"}, nil, "too short (at least 1s)"},
		{[]string{"--embedded-etcd", "/x", "--embedded-etcd-listen", "127.0.0.1:2379"}, nil, "--embedded-etcd-listen"},
		{[]string{"--etcd-endpoints", "ftp://x"}, nil, `--etcd-endpoints: invalid value "ftp://x"`},
		{[]string{"--embedded-etcd", "/x", "--as-number", "-1"}, nil, "not an AS number"},
		{[]string{"--embedded-etcd", "/x", "--iptables-backend", "ebpf"}, nil, "not one of auto, nft, legacy"},
		{[]string{"--embedded-etcd", "/x", "--default-endpoint-to-host-action", "Allow"}, nil, "not one of Accept, Return, Drop"},
		{[]string{"--embedded-etcd", "/x", "--takeover-node=perhaps"}, nil, "--takeover-node"},
		{[]string{"--embedded-etcd", "/x", "--agent-socket", ""}, nil, "--agent-socket"},
		{[]string{"--embedded-etcd", "/x", "stray"}, nil, "unexpected arguments"},
		{[]string{"--no-such-flag"}, nil, "unknown flag: --no-such-flag"},
	}
	for _, c := range cases {
		_, err := LoadConfig(c.args, env(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want %q", c.args, c.env, err, c.want)
		}
	}
	// Every problem is reported at once.
	_, err := LoadConfig([]string{"--bgp-port", "0", "--log-level", "x"}, env(nil))
	if err == nil || !strings.Contains(err.Error(), "--bgp-port") || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("want both problems: %v", err)
	}
}

// `calyx-agent config` shows each value with its source.
func TestConfigProvenance(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(file, []byte("metrics-addr: 127.0.0.1:19091\nfailsafe-ports: [tcp:22, 'udp:53']\n"), 0o600)
	c, err := LoadConfig([]string{"--node-name", "n1", "--config", file}, env(map[string]string{"CALYX_EMBEDDED_ETCD": "/var/lib/calyx"}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.PrintEffective(&buf, "json"); err != nil {
		t.Fatal(err)
	}
	var got []Effective
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	bySetting := map[string]Effective{}
	for _, e := range got {
		bySetting[e.Name] = e
	}
	want := map[string][2]string{
		"node-name":      {"n1", "flag"},
		"config":         {file, "flag"},
		"embedded-etcd":  {"/var/lib/calyx", "env CALYX_EMBEDDED_ETCD"},
		"metrics-addr":   {"127.0.0.1:19091", "file " + file},
		"failsafe-ports": {"tcp:22,udp:53", "file " + file},
		"bgp-port":       {"179", "default"},
	}
	for name, w := range want {
		if e := bySetting[name]; e.Value != w[0] || e.Source != w[1] {
			t.Errorf("%s: %+v, want value %q from %q", name, e, w[0], w[1])
		}
	}
	if len(got) != len(settings()) {
		t.Errorf("%d settings printed, the table has %d", len(got), len(settings()))
	}
	buf.Reset()
	if err := c.PrintEffective(&buf, "table"); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^embedded-etcd\s+/var/lib/calyx\s+env CALYX_EMBEDDED_ETCD$`).Match(buf.Bytes()) {
		t.Errorf("table output:\n%s", buf.String())
	}
}

// Boolean rows take --flag alone as true.
func TestConfigBooleanRow(t *testing.T) {
	var got bool
	s := field("x-on", "false", "", boolean, func(*Config) *bool { return &got }).isBool()
	fs, raw := flagSet([]setting{s})
	if err := fs.Parse([]string{"--x-on"}); err != nil {
		t.Fatal(err)
	}
	if err := s.set(&Config{}, raw["x-on"].text); err != nil || !got {
		t.Errorf("--x-on: %v %v", got, err)
	}
	if err := s.set(&Config{}, "maybe"); err == nil {
		t.Error("maybe is not a boolean")
	}
}

var updateDocs = flag.Bool("update-docs", false, "rewrite the settings table of docs/agent.md")

// docs/agent.md's settings table is the table in code.
func TestSettingsDocumented(t *testing.T) {
	path := filepath.Join("..", "docs", "agent.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- settings:begin (generated: go test ./agent -run TestSettingsDocumented -update-docs) -->\n", "<!-- settings:end -->"
	i, j := bytes.Index(doc, []byte(begin)), bytes.Index(doc, []byte(end))
	if i < 0 || j < i {
		t.Fatalf("%s: no %q ... %q markers", path, begin, end)
	}
	want := SettingsMarkdown()
	if got := string(doc[i+len(begin) : j]); got != want {
		if *updateDocs {
			out := append(append(append([]byte{}, doc[:i+len(begin)]...), want...), doc[j:]...)
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("%s: the settings table differs from the code; run go test ./agent -run TestSettingsDocumented -update-docs\nwant:\n%s", path, want)
	}
}
