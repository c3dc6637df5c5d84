package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/calyx-net/calyx/policy"
)

// Config is everything calyx-agent is told at start, parsed and validated
// once by LoadConfig: nothing later re-parses a setting.
type Config struct {
	NodeName string
	// NodeIP is the BGP source and next hop; invalid means "detect it from
	// the default route at start".
	NodeIP netip.Addr
	// NodeIPv6 is the IPv6 next hop; invalid means IPv4 only.
	NodeIPv6      netip.Addr
	EtcdEndpoints []string
	EtcdCA        string
	EtcdCert      string
	EtcdKey       string
	// EmbeddedEtcd runs a single-member etcd in-process with its data here.
	EmbeddedEtcd string
	// EmbeddedEtcdListen is the embedded etcd's client URL.
	EmbeddedEtcdListen string
	// ASNumber 0 means BGPConfig's.
	ASNumber    uint32
	BGPPort     int
	AgentSocket string
	// HealthAddr and MetricsAddr are host:port; empty turns them off.
	HealthAddr  string
	MetricsAddr string
	// PprofAddr serves Go's /debug/pprof/ (profiling); empty: off.
	PprofAddr      string
	LogLevel       slog.Level
	LogFormat      LogFormat
	ResyncInterval time.Duration
	// IPAMGCInterval and IPAMGCGrace drive the periodic IPAM garbage
	// collection of leaked allocations.
	IPAMGCInterval time.Duration
	IPAMGCGrace    time.Duration
	// FailsafePorts stay open to the host whatever the policy says.
	FailsafePorts   []policy.ProtoPort
	IptablesBackend policy.Backend
	// EndpointToHost is what happens to workload-to-host traffic its
	// egress policy allowed (Felix's DefaultEndpointToHostAction).
	EndpointToHost policy.HostAction
	// TakeoverNode lets the agent take over an existing Node whose
	// address differs (the host was readdressed or replaced).
	TakeoverNode bool
	// Kubeconfig is the API server's kubeconfig; empty: in-cluster when
	// running in a pod, else no Kubernetes.
	Kubeconfig string
	// ConfigFile is the --config YAML file, if any.
	ConfigFile string

	// effective is every setting's value and where it came from, in table
	// order (for `calyx-agent config`).
	effective []Effective
}

// LogFormat is how log lines are written.
type LogFormat string

const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// Effective is one setting as LoadConfig settled it.
type Effective struct {
	Name   string `json:"name"`
	Env    string `json:"env"`
	Value  string `json:"value"`
	Source string `json:"source"` // flag, env CALYX_…, file PATH, default
}

// Effective lists every setting with its value and source, in table order.
func (c *Config) Effective() []Effective { return c.effective }

// setting is one row of the settings table: the single source of a
// setting's flag (--name), environment variable (CALYX_NAME), --config file
// key (name), default, help text and parser.
type setting struct {
	name string
	def  string // the default as it would be written ("" for none)
	// defDoc is the default as the docs say it, when def is computed or
	// empty but means something.
	defDoc string
	help   string
	list   bool // comma-separated; a YAML list in the file
	bool   bool // a flag given without a value means true
	noFile bool // flag and environment only (--config itself)
	// set parses v and stores it; its error says what is wrong with v.
	set func(c *Config, v string) error
}

func (s setting) env() string {
	return "CALYX_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
}

// settings is the table. A new setting is one row here; docs/agent.md's
// table is checked against it (TestSettingsDocumented).
func settings() []setting {
	host, _ := os.Hostname()
	return []setting{
		field("node-name", strings.ToLower(host), "this node's name", nodeName, func(c *Config) *string { return &c.NodeName }).withDoc("host name"),
		field("node-ip", "", "this node's IPv4 address: BGP source and next hop", ipv4, func(c *Config) *netip.Addr { return &c.NodeIP }).withDoc("source address of the default route"),
		field("node-ipv6", "", "IPv6 next hop; turns on IPv6 unicast in BGP and IPv6 sysctls/ip6tables", ipv6, func(c *Config) *netip.Addr { return &c.NodeIPv6 }),
		listField("etcd-endpoints", "", "etcd client URLs, comma-separated", etcdEndpoint, func(c *Config) *[]string { return &c.EtcdEndpoints }),
		field("etcd-ca", "", "etcd CA certificate file", anyString, func(c *Config) *string { return &c.EtcdCA }),
		field("etcd-cert", "", "etcd client certificate file", anyString, func(c *Config) *string { return &c.EtcdCert }),
		field("etcd-key", "", "etcd client key file", anyString, func(c *Config) *string { return &c.EtcdKey }),
		field("embedded-etcd", "", "run a single-member etcd in-process with its data in this directory (one host, the lab)", anyString, func(c *Config) *string { return &c.EmbeddedEtcd }),
		field("embedded-etcd-listen", "http://127.0.0.1:2379", "client URL of the embedded etcd", httpURL, func(c *Config) *string { return &c.EmbeddedEtcdListen }),
		field("as-number", "0", "this node's AS number, written to its Node (0: BGPConfig's, 64512)", asNumber, func(c *Config) *uint32 { return &c.ASNumber }),
		field("bgp-port", "179", "BGP listen port (BGPConfig listenPort applies when this is left at 179)", port, func(c *Config) *int { return &c.BGPPort }),
		field("agent-socket", "/var/run/calyx/agent.sock", "unix socket of the CNI plugin and calyxctl: directory 0700, socket 0600, root callers only", nonEmpty, func(c *Config) *string { return &c.AgentSocket }),
		field("health-addr", "127.0.0.1:9099", "address of /livez and /readyz (empty: off)", hostPortOrEmpty, func(c *Config) *string { return &c.HealthAddr }),
		field("metrics-addr", "127.0.0.1:9091", "address of Prometheus /metrics (empty: off)", hostPortOrEmpty, func(c *Config) *string { return &c.MetricsAddr }),
		field("pprof-addr", "", "address of Go's /debug/pprof/ profiles, for looking into CPU and memory (empty: off)", hostPortOrEmpty, func(c *Config) *string { return &c.PprofAddr }),
		field("log-level", "info", "debug, info, warn or error (changed at runtime by calyxctl agent log-level)", ParseLogLevel, func(c *Config) *slog.Level { return &c.LogLevel }),
		field("log-format", "text", "text or json", enum(LogText, LogJSON), func(c *Config) *LogFormat { return &c.LogFormat }),
		field("resync-interval", "90s", "period of the full re-read of routes, chains and sysctls that repairs drift", durationAtLeast(time.Second), func(c *Config) *time.Duration { return &c.ResyncInterval }),
		field("ipam-gc-interval", "10m", "period of the release of allocations whose endpoint is gone (0: off)", durationAtLeast(0), func(c *Config) *time.Duration { return &c.IPAMGCInterval }),
		field("ipam-gc-grace", "15m", "age an allocation without endpoint must reach before GC releases it", durationAtLeast(0), func(c *Config) *time.Duration { return &c.IPAMGCGrace }),
		listField("failsafe-ports", "tcp:22,tcp:179,tcp:2379,tcp:2380,tcp:9099,tcp:9091", "proto:port pairs workloads always reach on the host, whatever the policy", ParseFailsafePort, func(c *Config) *[]policy.ProtoPort { return &c.FailsafePorts }),
		field("iptables-backend", "auto", "auto, nft or legacy", iptablesBackend, func(c *Config) *policy.Backend { return &c.IptablesBackend }),
		field("default-endpoint-to-host-action", "Accept", "what happens to traffic from a workload to its host once the workload's egress policy allowed it: Accept, Return (the host's INPUT rules decide) or Drop", enum(policy.HostActionAccept, policy.HostActionReturn, policy.HostActionDrop), func(c *Config) *policy.HostAction { return &c.EndpointToHost }),
		field("takeover-node", "false", "register even when a Node of this name exists with another address (the host was readdressed or replaced); without it such a start is refused, so two hosts with one name never share an identity", boolean, func(c *Config) *bool { return &c.TakeoverNode }).isBool(),
		field("kubeconfig", "", "Kubernetes API kubeconfig: CNI ADD reads the pod's labels, named ports and service account (empty: in-cluster when in a pod, else none)", anyString, func(c *Config) *string { return &c.Kubeconfig }),
		field("config", "", "YAML file whose keys are these settings' names", anyString, func(c *Config) *string { return &c.ConfigFile }).flagAndEnvOnly(),
	}
}

// field is a row whose value parse turns into a T stored at dst(c).
func field[T any](name, def, help string, parse func(string) (T, error), dst func(*Config) *T) setting {
	return setting{name: name, def: def, help: help, set: func(c *Config, v string) error {
		x, err := parse(v)
		if err == nil {
			*dst(c) = x
		}
		return err
	}}
}

// listField is a row holding a comma-separated list of what parse reads;
// an empty value is an empty list.
func listField[T any](name, def, help string, parse func(string) (T, error), dst func(*Config) *[]T) setting {
	s := field(name, def, help, func(v string) ([]T, error) {
		out := []T{}
		for _, p := range splitList(v) {
			x, err := parse(p)
			if err != nil {
				return nil, err
			}
			out = append(out, x)
		}
		return out, nil
	}, dst)
	s.list = true
	return s
}

func (s setting) withDoc(d string) setting { s.defDoc = d; return s }
func (s setting) flagAndEnvOnly() setting  { s.noFile = true; return s }

// isBool makes a boolean row's flag usable without a value (--x means
// --x=true); its parser should be boolean.
func (s setting) isBool() setting { s.bool = true; return s }

// ---- parsers: each says what is wrong with the value --------------------

func anyString(v string) (string, error) { return v, nil }

func boolean(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errors.New("not true or false")
	}
	return b, nil
}

func nonEmpty(v string) (string, error) {
	if v == "" {
		return "", errors.New("must not be empty")
	}
	return v, nil
}

func nodeName(v string) (string, error) {
	if v == "" {
		return "", errors.New("is required (the host name is empty)")
	}
	return v, nil
}

func ipv4(v string) (netip.Addr, error) {
	if v == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is4() {
		return netip.Addr{}, errors.New("not an IPv4 address")
	}
	return a, nil
}

func ipv6(v string) (netip.Addr, error) {
	if v == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || !a.Is6() || a.Is4In6() {
		return netip.Addr{}, errors.New("not an IPv6 address")
	}
	return a.WithZone(""), nil
}

func httpURL(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("not an http:// or https:// URL with a host")
	}
	return v, nil
}

// etcdEndpoint is a URL (http, https) or host:port, as etcd's client takes.
func etcdEndpoint(v string) (string, error) {
	if strings.Contains(v, "://") {
		return httpURL(v)
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return "", errors.New("not a URL (http://host:port) or host:port")
	}
	return v, nil
}

func asNumber(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, errors.New("not an AS number (0-4294967295)")
	}
	return uint32(n), nil
}

func port(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, errors.New("not a port (1-65535)")
	}
	return n, nil
}

func hostPortOrEmpty(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	_, p, err := net.SplitHostPort(v)
	if err != nil {
		return "", errors.New("not host:port (empty turns it off)")
	}
	if _, err := port(p); err != nil && p != "0" {
		return "", fmt.Errorf("port %q: %v", p, err)
	}
	return v, nil
}

func durationAtLeast(least time.Duration) func(string) (time.Duration, error) {
	return func(v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, errors.New("not a duration (e.g. 90s, 10m)")
		}
		if d < least {
			return 0, fmt.Errorf("too short (at least %s)", least)
		}
		return d, nil
	}
}

// enum accepts one of the values, case-insensitively.
func enum[T ~string](values ...T) func(string) (T, error) {
	return func(v string) (T, error) {
		names := make([]string, len(values))
		for i, x := range values {
			if strings.EqualFold(v, string(x)) {
				return x, nil
			}
			names[i] = string(x)
		}
		var zero T
		return zero, fmt.Errorf("not one of %s", strings.Join(names, ", "))
	}
}

func iptablesBackend(v string) (policy.Backend, error) {
	b, err := enum[policy.Backend]("auto", policy.BackendNFT, policy.BackendLegacy)(v)
	if b == "auto" {
		b = policy.BackendDefault
	}
	return b, err
}

// ParseFailsafePort reads "tcp:22" (or "22", meaning tcp).
func ParseFailsafePort(s string) (policy.ProtoPort, error) {
	proto, num, found := strings.Cut(s, ":")
	if !found {
		proto, num = "tcp", s
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" {
		return policy.ProtoPort{}, fmt.Errorf("%q: protocol must be tcp or udp", s)
	}
	n, err := port(num)
	if err != nil {
		return policy.ProtoPort{}, fmt.Errorf("%q: port must be 1-65535", s)
	}
	return policy.ProtoPort{Protocol: proto, Port: uint16(n)}, nil
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
	return 0, errors.New("not debug, info, warn or error")
}

// LevelName is the --log-level word of a level.
func LevelName(l slog.Level) string { return strings.ToLower(l.String()) }

// ---- loading -------------------------------------------------------------

// rawValue holds a flag's text as given; a list flag given twice appends.
type rawValue struct {
	s    setting
	text string
	set  bool
}

func (r *rawValue) String() string { return r.text }
func (r *rawValue) Set(v string) error {
	if r.s.list && r.set && r.text != "" {
		v = r.text + "," + v
	}
	r.text, r.set = v, true
	return nil
}
func (r *rawValue) Type() string {
	switch {
	case r.s.list:
		return "list"
	case r.s.bool:
		return "bool"
	}
	return "string"
}

// flagSet declares every row of the table as a flag holding raw text;
// parsing happens once, whatever the source, in LoadConfig.
func flagSet(table []setting) (*pflag.FlagSet, map[string]*rawValue) {
	fs := pflag.NewFlagSet("calyx-agent", pflag.ContinueOnError)
	fs.SortFlags = false
	raw := map[string]*rawValue{}
	for _, s := range table {
		v := &rawValue{s: s, text: s.def}
		raw[s.name] = v
		f := fs.VarPF(v, s.name, "", s.help)
		if s.bool {
			f.NoOptDefVal = "true"
		}
	}
	fs.Usage = func() {}
	return fs, raw
}

// LoadConfig builds the configuration from arguments, environment and the
// optional --config file (precedence flag > env > file > default), parses
// every value once and validates the whole. Errors name the flag, variable
// or file key and the value.
func LoadConfig(args []string, getenv func(string) string) (*Config, error) {
	table := settings()
	fs, raw := flagSet(table)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%v (calyx-agent --help lists the settings)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c := &Config{}
	configFile := raw["config"].text
	if !raw["config"].set {
		configFile = getenv("CALYX_CONFIG")
	}
	var file map[string]string
	if configFile != "" {
		var err error
		if file, err = readConfigFile(configFile, table); err != nil {
			return nil, err
		}
	}
	var problems []string
	for _, s := range table {
		value, source, where := s.def, "default", "default of --"+s.name
		if r := raw[s.name]; r.set {
			value, source, where = r.text, "flag", "--"+s.name
		} else if v := getenv(s.env()); v != "" {
			value, source, where = v, "env "+s.env(), s.env()
		} else if v, ok := file[s.name]; ok {
			value, source, where = v, "file "+configFile, configFile+": "+s.name
		}
		if err := s.set(c, value); err != nil {
			problems = append(problems, fmt.Sprintf("%s: invalid value %q: %v", where, value, err))
		}
		c.effective = append(c.effective, Effective{Name: s.name, Env: s.env(), Value: value, Source: source})
	}
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

// readConfigFile reads a YAML map of setting names to values; unknown keys
// are an error so that a typo does not silently keep the default.
func readConfigFile(path string, table []setting) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var rawMap map[string]any
	if err := yaml.Unmarshal(data, &rawMap); err != nil {
		return nil, fmt.Errorf("%s: not a YAML map of settings: %v", path, err)
	}
	known := map[string]bool{}
	for _, s := range table {
		known[s.name] = !s.noFile
	}
	out := map[string]string{}
	var unknown, bad []string
	for k, v := range rawMap {
		if !known[k] {
			unknown = append(unknown, k)
			continue
		}
		text, err := yamlScalar(v)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %s: %v", path, k, err))
			continue
		}
		out[k] = text
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%s: unknown settings %s (keys are the flag names, e.g. node-name)", path, strings.Join(unknown, ", "))
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return nil, errors.New(strings.Join(bad, "\n"))
	}
	return out, nil
}

// yamlScalar is a file value as the flag would spell it: lists are
// comma-joined, numbers written without exponent.
func yamlScalar(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case []any:
		parts := make([]string, len(x))
		for i, p := range x {
			s, err := yamlScalar(p)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		return "", errors.New("a map, want a value or a list")
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	default:
		return fmt.Sprint(x), nil
	}
}

// validate checks what no single setting can.
func (c *Config) validate() error {
	var problems []string
	if len(c.EtcdEndpoints) == 0 && c.EmbeddedEtcd == "" {
		problems = append(problems, "no datastore: give --etcd-endpoints or --embedded-etcd DIR")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}
