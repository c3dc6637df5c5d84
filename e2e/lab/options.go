package lab

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Options describe the lab Up builds.
type Options struct {
	// Dir holds the lab's state, logs and sockets (default
	// /run/calyx-lab/default). Tests use a t.TempDir().
	Dir string `json:"dir"`
	// Hosts is the number of host namespaces, each with its own agent
	// (default 2, at most MaxHosts).
	Hosts int `json:"hosts"`
	// Workloads is the number of workloads Up creates on every host.
	Workloads int `json:"workloads"`
	// Peer is "" or "bird": a BIRD top-of-rack router peering with every host.
	Peer string `json:"peer,omitempty"`
	// Reflectors makes hosts 1..K route reflectors and turns the
	// node-to-node mesh off.
	Reflectors int `json:"reflectors,omitempty"`
	// EtcdMembers is the size of the etcd cluster: 1 (default), 3 or 5
	// members, each in its own namespace on the fabric (see etcd.go).
	EtcdMembers int `json:"etcdMembers,omitempty"`
	// Pool is the workload IPPool (default 10.244.0.0/16).
	Pool string `json:"pool"`
	// IPv6 makes the lab dual stack: the fabric and every host get an IPv6
	// address too (HostIPv6, default route via FabricGateway6), an IPv6
	// IPPool (Pool6) is added, the agents run with --node-ipv6, and the
	// BIRD ToR, if any, also peers with every host over IPv6.
	IPv6 bool `json:"ipv6,omitempty"`
	// Pool6 is the IPv6 workload IPPool of a dual-stack lab (default
	// fd00:10:244::/56); ignored without IPv6.
	Pool6 string `json:"pool6,omitempty"`
	// Kubernetes runs the real kube-apiserver and calyx-kube-controllers
	// too, and the agents with a kubeconfig (see kube.go).
	Kubernetes bool `json:"kubernetes,omitempty"`
	// KubeControllers is how many calyx-kube-controllers replicas run
	// (default 1; one leads, the others stand by).
	KubeControllers int `json:"kubeControllers,omitempty"`
	// KubeControllerArgs are appended to every controllers' command line.
	KubeControllerArgs []string `json:"kubeControllerArgs,omitempty"`
	// BinDir holds calyx-agent, calyx (the CNI plugin) and calyxctl.
	BinDir string `json:"binDir"`
	// SkipAgents builds everything but starts no agent, so that the lab's
	// own machinery can be tested before the agent exists.
	SkipAgents bool `json:"skipAgents,omitempty"`
	// AgentArgs are appended to every agent's command line.
	AgentArgs []string `json:"agentArgs,omitempty"`
	// AgentLogLevel is the agents' --log-level (default info).
	AgentLogLevel string `json:"agentLogLevel,omitempty"`
	// StepTimeout bounds each wait of Up (etcd ready, an agent ready;
	// default 60 s).
	StepTimeout time.Duration `json:"stepTimeout,omitempty"`
	// Logger receives progress; default discards.
	Logger *slog.Logger `json:"-"`
}

const (
	PeerNone = ""
	PeerBird = "bird"
)

// withDefaults fills the zero fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		o.Dir = filepath.Join(DefaultDirRoot, "default")
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("lab directory %q: %w", o.Dir, err)
	}
	o.Dir = abs
	if o.Hosts == 0 {
		o.Hosts = 2
	}
	if o.Pool == "" {
		o.Pool = DefaultPool
	}
	if o.EtcdMembers == 0 {
		o.EtcdMembers = 1
	}
	if o.IPv6 && o.Pool6 == "" {
		o.Pool6 = DefaultPool6
	}
	if o.Kubernetes && o.KubeControllers == 0 {
		o.KubeControllers = 1
	}
	if o.AgentLogLevel == "" {
		o.AgentLogLevel = "info"
	}
	if o.StepTimeout == 0 {
		o.StepTimeout = 60 * time.Second
	}
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir()
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return o, fmt.Errorf("bin dir: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, o.validate()
}

func (o Options) validate() error {
	var errs []error
	if o.Hosts < 1 || o.Hosts > MaxHosts {
		errs = append(errs, fmt.Errorf("--hosts %d: want 1 to %d", o.Hosts, MaxHosts))
	}
	if o.Workloads < 0 {
		errs = append(errs, fmt.Errorf("--workloads %d: must not be negative", o.Workloads))
	}
	if o.Workloads > 0 && o.SkipAgents {
		errs = append(errs, errors.New("workloads need agents: SkipAgents and Workloads > 0 do not go together"))
	}
	if o.EtcdMembers < 1 || o.EtcdMembers > MaxEtcdMembers || o.EtcdMembers%2 == 0 {
		errs = append(errs, fmt.Errorf("--etcd-members %d: want 1, 3 or 5 (an even count tolerates no more failures than the odd one below it)", o.EtcdMembers))
	}
	if !o.Kubernetes && (o.KubeControllers != 0 || len(o.KubeControllerArgs) > 0) {
		errs = append(errs, errors.New("kube controllers need --kubernetes"))
	}
	if o.KubeControllers < 0 || o.KubeControllers > 3 {
		errs = append(errs, fmt.Errorf("--kube-controllers %d: want 1 to 3", o.KubeControllers))
	}
	if o.Peer != PeerNone && o.Peer != PeerBird {
		errs = append(errs, fmt.Errorf("--peer %q: the only peer is \"bird\"", o.Peer))
	}
	if o.Reflectors < 0 || o.Reflectors > o.Hosts {
		errs = append(errs, fmt.Errorf("--reflectors %d: want 0 to the number of hosts (%d)", o.Reflectors, o.Hosts))
	}
	if p, err := netip.ParsePrefix(o.Pool); err != nil {
		errs = append(errs, fmt.Errorf("--pool %q: %w", o.Pool, err))
	} else if p.Masked() != p {
		errs = append(errs, fmt.Errorf("--pool %q: host bits set (did you mean %s?)", o.Pool, p.Masked()))
	} else if p.Overlaps(netip.MustParsePrefix("198.18.0.0/15")) {
		errs = append(errs, fmt.Errorf("--pool %q overlaps the lab fabric 198.18.0.0/15", o.Pool))
	}
	if o.IPv6 {
		if p, err := netip.ParsePrefix(o.Pool6); err != nil {
			errs = append(errs, fmt.Errorf("--pool6 %q: %w", o.Pool6, err))
		} else if !p.Addr().Is6() || p.Addr().Is4In6() {
			errs = append(errs, fmt.Errorf("--pool6 %q is not an IPv6 prefix", o.Pool6))
		} else if p.Masked() != p {
			errs = append(errs, fmt.Errorf("--pool6 %q: host bits set (did you mean %s?)", o.Pool6, p.Masked()))
		} else if p.Overlaps(fabricNet6) {
			errs = append(errs, fmt.Errorf("--pool6 %q overlaps the lab's IPv6 fabric %s", o.Pool6, fabricNet6))
		}
	} else if o.Pool6 != "" {
		errs = append(errs, fmt.Errorf("--pool6 %q needs --ipv6", o.Pool6))
	}
	// A unix socket path must fit in sun_path (108 bytes with the NUL).
	if sock := agentSocketPath(o.Dir, o.Hosts); len(sock) > 107 {
		errs = append(errs, fmt.Errorf("lab directory %q is too long: the agent socket path %q exceeds 107 bytes", o.Dir, sock))
	}
	return errors.Join(errs...)
}

// DefaultBinDir is the directory of the running executable, so that
// `make build` (everything in ./bin) just works; the CALYX_BIN_DIR
// environment variable overrides it (the e2e suites run from a test binary).
func DefaultBinDir() string {
	if d := os.Getenv("CALYX_BIN_DIR"); d != "" {
		return d
	}
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}

// Lab directory layout.
func statePath(dir string) string              { return filepath.Join(dir, "state.json") }
func lockPath(dir string) string               { return filepath.Join(dir, "lock") }
func logDir(dir string) string                 { return filepath.Join(dir, "logs") }
func etcdDataDir(dir string) string            { return filepath.Join(dir, "etcd") }
func cniDir(dir string) string                 { return filepath.Join(dir, "cni") }
func torDir(dir string) string                 { return filepath.Join(dir, "tor") }
func hostDir(dir string, i int) string         { return filepath.Join(dir, HostName(i)) }
func agentSocketPath(dir string, i int) string { return filepath.Join(hostDir(dir, i), "agent.sock") }
func agentLogPath(dir string, i int) string {
	return filepath.Join(logDir(dir), HostName(i)+"-agent.log")
}
