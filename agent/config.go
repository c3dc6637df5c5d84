package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Config is everything calyx-agent is told at start. Each field is a flag
// (--node-name), an environment variable (CALYX_NODE_NAME) and a key of the
// --config YAML file (node-name); precedence flag > env > file > default.
type Config struct {
	NodeName      string
	NodeIP        string
	NodeIPv6      string
	EtcdEndpoints []string
	EtcdCA        string
	EtcdCert      string
	EtcdKey       string
	// EmbeddedEtcd runs a single-member etcd in-process with its data here.
	EmbeddedEtcd string
	// EmbeddedEtcdListen is the embedded etcd's client URL.
	EmbeddedEtcdListen string
	ASNumber           uint32
	BGPPort            int
	AgentSocket        string
	HealthAddr         string
	MetricsAddr        string
	LogLevel           string
	ResyncInterval     time.Duration
	// IPAMGCInterval and IPAMGCGrace drive the periodic IPAM garbage
	// collection of leaked allocations.
	IPAMGCInterval time.Duration
	IPAMGCGrace    time.Duration
	// FailsafePorts stay open to the host whatever the policy says.
	FailsafePorts []string
	// IptablesBackend: auto, nft or legacy.
	IptablesBackend string
	// ConfigFile is where the YAML came from (for messages).
	ConfigFile string
}

// DefaultFailsafePorts keep the host reachable for SSH, BGP, etcd and the
// agent's own health and metrics endpoints.
var DefaultFailsafePorts = []string{"tcp:22", "tcp:179", "tcp:2379", "tcp:2380", "tcp:9099", "tcp:9091"}

// flagSet declares every setting once; env and file values are applied
// through the same flags so that parsing and validation happen in one place.
func flagSet(c *Config) *pflag.FlagSet {
	fs := pflag.NewFlagSet("calyx-agent", pflag.ContinueOnError)
	host, _ := os.Hostname()
	fs.StringVar(&c.NodeName, "node-name", strings.ToLower(host), "this node's name (default: the host name)")
	fs.StringVar(&c.NodeIP, "node-ip", "", "this node's IPv4 address: BGP source and next hop (default: the source address of the default route)")
	fs.StringVar(&c.NodeIPv6, "node-ipv6", "", "this node's IPv6 address, the next hop of IPv6 routes (optional)")
	fs.StringSliceVar(&c.EtcdEndpoints, "etcd-endpoints", nil, "etcd client URLs, comma-separated")
	fs.StringVar(&c.EtcdCA, "etcd-ca", "", "etcd CA certificate file")
	fs.StringVar(&c.EtcdCert, "etcd-cert", "", "etcd client certificate file")
	fs.StringVar(&c.EtcdKey, "etcd-key", "", "etcd client key file")
	fs.StringVar(&c.EmbeddedEtcd, "embedded-etcd", "", "run a single-member etcd in-process with its data in DIR")
	fs.StringVar(&c.EmbeddedEtcdListen, "embedded-etcd-listen", "http://127.0.0.1:2379", "client URL of the embedded etcd")
	fs.Uint32Var(&c.ASNumber, "as-number", 0, "this node's AS number (default: BGPConfig's, 64512)")
	fs.IntVar(&c.BGPPort, "bgp-port", 179, "BGP listen port")
	fs.StringVar(&c.AgentSocket, "agent-socket", "/var/run/calyx/agent.sock", "unix socket for the CNI plugin and calyxctl (mode 0600)")
	fs.StringVar(&c.HealthAddr, "health-addr", "127.0.0.1:9099", "address of /livez and /readyz (empty: off)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9091", "address of Prometheus /metrics (empty: off)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&c.ResyncInterval, "resync-interval", 90*time.Second, "period of the full dataplane resync (routes, chains, sysctls)")
	fs.DurationVar(&c.IPAMGCInterval, "ipam-gc-interval", 10*time.Minute, "period of IPAM garbage collection (0: off)")
	fs.DurationVar(&c.IPAMGCGrace, "ipam-gc-grace", 15*time.Minute, "age an allocation without endpoint must reach before GC releases it")
	fs.StringSliceVar(&c.FailsafePorts, "failsafe-ports", DefaultFailsafePorts, "proto:port pairs that stay open to the host whatever the policy")
	fs.StringVar(&c.IptablesBackend, "iptables-backend", "auto", "auto, nft or legacy")
	fs.StringVar(&c.ConfigFile, "config", "", "YAML file whose keys are these flags' names")
	return fs
}

// LoadConfig builds the configuration from arguments, environment and the
// optional --config file.
func LoadConfig(args []string, getenv func(string) string) (*Config, error) {
	c := &Config{}
	fs := flagSet(c)
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.ConfigFile == "" {
		c.ConfigFile = getenv("CALYX_CONFIG")
	}
	fileValues := map[string]string{}
	if c.ConfigFile != "" {
		var err error
		if fileValues, err = readConfigFile(c.ConfigFile, fs); err != nil {
			return nil, err
		}
	}
	var problems []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" {
			return
		}
		env := "CALYX_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		source, value := "", ""
		if v := getenv(env); v != "" {
			source, value = env, v
		} else if v, ok := fileValues[f.Name]; ok {
			source, value = c.ConfigFile+": "+f.Name, v
		} else {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			// Replace the default list rather than appending to it.
			if err := sv.Replace(splitList(value)); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", source, err))
			}
			return
		}
		if err := f.Value.Set(value); err != nil {
			problems = append(problems, fmt.Sprintf("%s: invalid value %q: %v", source, value, err))
		}
	})
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return c, c.validate()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// readConfigFile reads a YAML map of flag names to values; unknown keys
// are an error so that a typo does not silently keep the default.
func readConfigFile(path string, fs *pflag.FlagSet) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: not a YAML map of settings: %v", path, err)
	}
	out := map[string]string{}
	var unknown []string
	for k, v := range raw {
		if fs.Lookup(k) == nil || k == "config" {
			unknown = append(unknown, k)
			continue
		}
		switch x := v.(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
		case float64:
			out[k] = fmt.Sprintf("%v", int64(x))
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%s: unknown settings %s (keys are the flag names, e.g. node-name)", path, strings.Join(unknown, ", "))
	}
	return out, nil
}

func (c *Config) validate() error {
	var problems []string
	if c.NodeName == "" {
		problems = append(problems, "--node-name: is required (the host name is empty)")
	}
	if c.NodeIP != "" {
		if a, err := netip.ParseAddr(c.NodeIP); err != nil || !a.Is4() {
			problems = append(problems, fmt.Sprintf("--node-ip: %q is not an IPv4 address", c.NodeIP))
		}
	}
	if c.NodeIPv6 != "" {
		if a, err := netip.ParseAddr(c.NodeIPv6); err != nil || !a.Is6() {
			problems = append(problems, fmt.Sprintf("--node-ipv6: %q is not an IPv6 address", c.NodeIPv6))
		}
	}
	if len(c.EtcdEndpoints) == 0 && c.EmbeddedEtcd == "" {
		problems = append(problems, "no datastore: give --etcd-endpoints or --embedded-etcd DIR")
	}
	if c.BGPPort < 1 || c.BGPPort > 65535 {
		problems = append(problems, fmt.Sprintf("--bgp-port: %d is out of range (1-65535)", c.BGPPort))
	}
	if c.AgentSocket == "" {
		problems = append(problems, "--agent-socket: is required")
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		problems = append(problems, "--log-level: "+err.Error())
	}
	if c.ResyncInterval < time.Second {
		problems = append(problems, fmt.Sprintf("--resync-interval: %s is too short (at least 1s)", c.ResyncInterval))
	}
	switch c.IptablesBackend {
	case "auto", "nft", "legacy":
	default:
		problems = append(problems, fmt.Sprintf("--iptables-backend: %q is not auto, nft or legacy", c.IptablesBackend))
	}
	for _, p := range c.FailsafePorts {
		if _, _, err := ParseFailsafePort(p); err != nil {
			problems = append(problems, "--failsafe-ports: "+err.Error())
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// ParseFailsafePort reads "tcp:22" (or "22", meaning tcp).
func ParseFailsafePort(s string) (proto string, port uint16, err error) {
	proto, num, found := strings.Cut(s, ":")
	if !found {
		proto, num = "tcp", s
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" {
		return "", 0, fmt.Errorf("%q: protocol must be tcp or udp", s)
	}
	var n int
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("%q: port must be 1-65535", s)
	}
	return proto, uint16(n), nil
}

// ParseLogLevel maps the --log-level words to slog levels.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
}
