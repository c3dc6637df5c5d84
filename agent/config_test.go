package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Precedence: flag > env > file > default, for scalars and lists.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(file, []byte("node-name: from-file\nbgp-port: 1179\nlog-level: warn\netcd-endpoints: [http://file:2379]\nresync-interval: 30s\n"), 0o600)

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
	if c.LogLevel != "warn" || c.ResyncInterval != 30*time.Second || len(c.EtcdEndpoints) != 1 || c.EtcdEndpoints[0] != "http://file:2379" {
		t.Errorf("file must beat default: %+v", c)
	}
	if c.AgentSocket != "/var/run/calyx/agent.sock" || c.HealthAddr != "127.0.0.1:9099" {
		t.Errorf("defaults: %+v", c)
	}
	// An env list replaces the default list.
	c, err = LoadConfig([]string{"--embedded-etcd", "/tmp/x"}, env(map[string]string{"CALYX_FAILSAFE_PORTS": "tcp:22, udp:53"}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.FailsafePorts, ",") != "tcp:22,udp:53" {
		t.Errorf("env list: %v", c.FailsafePorts)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(file, []byte("node-nme: x\n"), 0o600)
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--config", file}, nil, "unknown settings node-nme"},
		{[]string{}, map[string]string{"CALYX_BGP_PORT": "abc"}, `CALYX_BGP_PORT: invalid value "abc"`},
		{[]string{"--embedded-etcd", "/x", "--node-ip", "fd00::1"}, nil, `--node-ip: "fd00::1" is not an IPv4 address`},
		{[]string{"--node-name", "h"}, nil, "no datastore"},
		{[]string{"--embedded-etcd", "/x", "--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--embedded-etcd", "/x", "--failsafe-ports", "icmp:1"}, nil, "protocol must be tcp or udp"},
	}
	for _, c := range cases {
		_, err := LoadConfig(c.args, env(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want %q", c.args, c.env, err, c.want)
		}
	}
}
