package policy

import (
	"fmt"
	"strings"
	"time"
)

// Backend selects which iptables binaries program the kernel.
type Backend string

const (
	// BackendDefault uses iptables-restore / iptables-save as the system's
	// alternatives pick them (nf_tables on Debian 12).
	BackendDefault Backend = ""
	// BackendNFT forces the iptables-nft-* binaries.
	BackendNFT Backend = "nft"
	// BackendLegacy forces the iptables-legacy-* binaries.
	BackendLegacy Backend = "legacy"
)

// HostAction is what happens to traffic from a workload to the host itself
// once the workload's egress policy allowed it.
type HostAction string

const (
	// HostActionAccept accepts it (the default).
	HostActionAccept HostAction = "Accept"
	// HostActionReturn leaves the decision to the host's own INPUT rules.
	HostActionReturn HostAction = "Return"
	// HostActionDrop drops it; only failsafe ports stay open.
	HostActionDrop HostAction = "Drop"
)

// ProtoPort is one failsafe port: traffic from workloads to this port of the
// host is accepted before any policy.
type ProtoPort struct {
	Protocol string // "tcp" or "udp"
	Port     uint16
}

func (p ProtoPort) String() string { return fmt.Sprintf("%s:%d", p.Protocol, p.Port) }

// DefaultFailsafeInbound keeps SSH, BGP, etcd and the agent's health and
// metrics ports reachable whatever the policies say.
var DefaultFailsafeInbound = []ProtoPort{
	{"tcp", 22}, {"tcp", 179}, {"tcp", 2379}, {"tcp", 2380}, {"tcp", 9091}, {"tcp", 9099},
}

// Config is what a Dataplane needs besides the desired state. The zero value
// of every field but NodeName means "use the default".
type Config struct {
	// NodeName decides which endpoints are local (Spec.Node == NodeName):
	// only those get chains; all endpoints' addresses feed selector sets.
	NodeName string
	// IPv6 also programs ip6tables and inet6 sets.
	IPv6 bool
	// Backend picks the iptables binaries.
	Backend Backend
	// CommandPrefix is prepended to every command, e.g.
	// []string{"ip", "netns", "exec", "NAME"} to aim at a test namespace.
	CommandPrefix []string
	// NetNS is the path of the network namespace the netlink writes of set
	// members go to. Empty: the namespace CommandPrefix "ip netns exec NAME"
	// aims at, or the agent's own without a prefix; with any other prefix
	// (and with NewWithRunner) set members are written by ipset restore.
	NetNS string
	// InterfacePrefix is the host-side name prefix of workload interfaces
	// ("cx"); the fail-closed DROP covers every interface with it.
	InterfacePrefix string
	// FailsafeInbound are host ports workloads can always reach. nil means
	// DefaultFailsafeInbound; an empty non-nil slice means none.
	FailsafeInbound []ProtoPort
	// EndpointToHost is applied after egress policy allowed a packet from a
	// workload to the host (default Accept).
	EndpointToHost HostAction
	// HostToWorkloadPolicy also puts traffic from the host to its local
	// workloads through their ingress policy. Off by default, as in Calico,
	// so that the host (kubelet probes) always reaches its workloads.
	HostToWorkloadPolicy bool
	// AcceptMark is the single packet-mark bit that carries "a policy allowed
	// this packet" from a policy chain back to the endpoint chain.
	AcceptMark uint32
	// DispatchSplit is the number of local endpoints above which the dispatch
	// chains are split into a tree by the first character after the prefix.
	DispatchSplit int
	// ResyncInterval is how often Run re-reads the kernel to repair drift.
	ResyncInterval time.Duration
	// MaxFailures is the number of consecutive failed writes after which
	// Ready reports an error.
	MaxFailures int
	// LockTimeout bounds the wait for the xtables lock of every
	// iptables-restore and iptables call (-w, whole seconds; default
	// DefaultLockTimeout). Another program holding the lock longer fails
	// the write, which is retried and, MaxFailures times in a row, shows
	// in Ready; waiting forever would stall the policy loop silently.
	LockTimeout time.Duration
	// OnApply, if set, is called after each Apply that wrote to the kernel
	// or failed, with its duration (the agent's metrics).
	OnApply func(took time.Duration, err error)

	marks marks // derived from AcceptMark by withDefaults
}

const (
	defaultInterfacePrefix = "cx"
	defaultAcceptMark      = 0x10000
	defaultDispatchSplit   = 32
	defaultResyncInterval  = 90 * time.Second
	defaultMaxFailures     = 3
	// DefaultLockTimeout is LockTimeout's default: long enough for a
	// kube-proxy or firewall reload, short enough to show a stuck lock.
	DefaultLockTimeout = 5 * time.Second
)

// lockWait is LockTimeout in iptables' -w seconds.
func (c *Config) lockWait() int { return int(c.LockTimeout / time.Second) }

// withDefaults fills unset fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.InterfacePrefix == "" {
		c.InterfacePrefix = defaultInterfacePrefix
	}
	if !validIfaceChars(c.InterfacePrefix) {
		return c, fmt.Errorf("interface prefix %q: only letters, digits, '.', '_' and '-' are allowed", c.InterfacePrefix)
	}
	if c.FailsafeInbound == nil {
		c.FailsafeInbound = DefaultFailsafeInbound
	}
	for _, fp := range c.FailsafeInbound {
		if fp.Protocol != "tcp" && fp.Protocol != "udp" {
			return c, fmt.Errorf("failsafe port %s: protocol must be tcp or udp", fp)
		}
	}
	switch c.EndpointToHost {
	case "":
		c.EndpointToHost = HostActionAccept
	case HostActionAccept, HostActionReturn, HostActionDrop:
	default:
		return c, fmt.Errorf("endpoint-to-host action %q: want Accept, Return or Drop", c.EndpointToHost)
	}
	switch c.Backend {
	case BackendDefault, BackendNFT, BackendLegacy:
	default:
		return c, fmt.Errorf("iptables backend %q: want \"\", nft or legacy", c.Backend)
	}
	if c.AcceptMark == 0 {
		c.AcceptMark = defaultAcceptMark
	}
	if c.AcceptMark&(c.AcceptMark-1) != 0 {
		return c, fmt.Errorf("accept mark %#x must be a single bit", c.AcceptMark)
	}
	c.marks = newMarks(c.AcceptMark)
	if c.DispatchSplit <= 0 {
		c.DispatchSplit = defaultDispatchSplit
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = defaultResyncInterval
	}
	if c.MaxFailures <= 0 {
		c.MaxFailures = defaultMaxFailures
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = DefaultLockTimeout
	}
	if c.LockTimeout < time.Second || c.LockTimeout%time.Second != 0 {
		return c, fmt.Errorf("xtables lock timeout %v: want whole seconds, at least 1s (iptables -w takes seconds)", c.LockTimeout)
	}
	return c, nil
}

// validIfaceChars limits interface names to characters that need no quoting
// in iptables-restore input and chain names.
func validIfaceChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

// checkInterfaceName says why a local endpoint's interface cannot be used.
func (c *Config) checkInterfaceName(name string) error {
	switch {
	case len(name) > 15:
		return fmt.Errorf("interface name %q is longer than 15 characters", name)
	case !validIfaceChars(name):
		return fmt.Errorf("interface name %q: only letters, digits, '.', '_' and '-' are allowed", name)
	case !strings.HasPrefix(name, c.InterfacePrefix) || len(name) == len(c.InterfacePrefix):
		return fmt.Errorf("interface name %q must start with %q and be longer (the fail-closed rules match %s+)",
			name, c.InterfacePrefix, c.InterfacePrefix)
	}
	return nil
}
