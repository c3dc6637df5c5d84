// Package datastore holds Calyx's resource model (the kinds users apply with
// calyxctl), its validation, the etcd key layout, the etcd client and the
// syncer the agent runs on.
package datastore

import (
	"fmt"
	"sort"
	"strings"
)

// APIVersion is the only apiVersion Calyx accepts.
const APIVersion = "calyx.dev/v1"

// Kind names a resource kind, spelt as in YAML documents ("IPPool").
type Kind string

const (
	KindBGPConfig        Kind = "BGPConfig"
	KindNode             Kind = "Node"
	KindBGPPeer          Kind = "BGPPeer"
	KindIPPool           Kind = "IPPool"
	KindIPAMConfig       Kind = "IPAMConfig"
	KindWorkloadEndpoint Kind = "WorkloadEndpoint"
	KindPolicy           Kind = "Policy"
	KindProfile          Kind = "Profile"
	KindBGPFilter        Kind = "BGPFilter"
)

// Kinds lists every kind, in the order calyxctl applies them (dependencies
// first) and prints them.
var Kinds = []Kind{KindBGPConfig, KindIPAMConfig, KindIPPool, KindNode, KindBGPFilter, KindBGPPeer, KindPolicy, KindProfile, KindWorkloadEndpoint}

// kindInfo is what the CLI and the key layout need to know about a kind.
type kindInfo struct {
	plural    string
	short     []string
	singleton bool // only the name "default" is allowed
	newFn     func() Resource
}

var kindTable = map[Kind]kindInfo{
	KindBGPConfig:        {"bgpconfigs", []string{"bgpconfig", "bgpc"}, true, func() Resource { return &BGPConfig{} }},
	KindNode:             {"nodes", []string{"node", "no"}, false, func() Resource { return &Node{} }},
	KindBGPPeer:          {"bgppeers", []string{"bgppeer", "bgpp", "peer", "peers"}, false, func() Resource { return &BGPPeer{} }},
	KindIPPool:           {"ippools", []string{"ippool", "pool", "pools", "ipp"}, false, func() Resource { return &IPPool{} }},
	KindIPAMConfig:       {"ipamconfigs", []string{"ipamconfig", "ipamc"}, true, func() Resource { return &IPAMConfig{} }},
	KindWorkloadEndpoint: {"workloadendpoints", []string{"workloadendpoint", "wep", "weps", "endpoint", "endpoints"}, false, func() Resource { return &WorkloadEndpoint{} }},
	KindPolicy:           {"policies", []string{"policy", "pol", "netpol"}, false, func() Resource { return &Policy{} }},
	KindProfile:          {"profiles", []string{"profile", "pro"}, false, func() Resource { return &Profile{} }},
	KindBGPFilter:        {"bgpfilters", []string{"bgpfilter", "bgpf"}, false, func() Resource { return &BGPFilter{} }},
}

// ParseKind accepts a kind's canonical name, its plural or a short form, in
// any case ("IPPool", "ippools", "pool").
func ParseKind(s string) (Kind, error) {
	l := strings.ToLower(s)
	for k, info := range kindTable {
		if l == strings.ToLower(string(k)) || l == info.plural {
			return k, nil
		}
		for _, sh := range info.short {
			if l == sh {
				return k, nil
			}
		}
	}
	names := make([]string, 0, len(kindTable))
	for _, k := range Kinds {
		names = append(names, string(k))
	}
	return "", fmt.Errorf("unknown kind %q (known kinds: %s)", s, strings.Join(names, ", "))
}

// NewResource returns an empty resource of the kind, with apiVersion and
// kind filled in.
func NewResource(k Kind) (Resource, error) {
	info, ok := kindTable[k]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q", k)
	}
	r := info.newFn()
	tm := r.typeMeta()
	tm.APIVersion, tm.Kind = APIVersion, k
	return r, nil
}

// IsSingleton reports whether the kind only has the one object "default".
func (k Kind) IsSingleton() bool { return kindTable[k].singleton }

// Plural is the kind's lower-case plural, as printed by calyxctl.
func (k Kind) Plural() string { return kindTable[k].plural }

// TypeMeta is the apiVersion/kind header every document carries.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       Kind   `json:"kind"`
}

// Metadata names a resource and carries the labels selectors match.
type Metadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// ResourceVersion is the etcd mod revision the object was read at. It is
	// set by the client on reads; Update refuses to write over a newer one.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// CreationTimestamp is set by the client on create (RFC 3339).
	CreationTimestamp string `json:"creationTimestamp,omitempty"`
}

// Resource is any Calyx object stored in etcd.
type Resource interface {
	GetKind() Kind
	GetMeta() *Metadata
	// validateSpec checks the spec alone; cross-object checks (overlapping
	// pools) live in ValidateSet.
	validateSpec(v *validator)
	typeMeta() *TypeMeta
}

func (t *TypeMeta) GetKind() Kind       { return t.Kind }
func (t *TypeMeta) typeMeta() *TypeMeta { return t }

// ---- BGPConfig --------------------------------------------------------------

// BGPConfig is the cluster-wide BGP settings; the only object is "default".
type BGPConfig struct {
	TypeMeta `json:",inline"`
	Metadata Metadata      `json:"metadata"`
	Spec     BGPConfigSpec `json:"spec"`
}

type BGPConfigSpec struct {
	// ASNumber is the default AS of every node (64512 when unset).
	ASNumber uint32 `json:"asNumber,omitempty"`
	// NodeToNodeMesh peers every node with every other (default true).
	NodeToNodeMesh *bool `json:"nodeToNodeMesh,omitempty"`
	// ListenPort is the BGP port (default 179).
	ListenPort      int                  `json:"listenPort,omitempty"`
	GracefulRestart *GracefulRestartSpec `json:"gracefulRestart,omitempty"`
	// AdvertiseBlocks announces each IPAM block as one prefix (default true);
	// when false every workload address is announced as a /32 (/128).
	AdvertiseBlocks *bool `json:"advertiseBlocks,omitempty"`
	// BFD runs on the node-to-node sessions (mesh and reflectors).
	BFD *BFDSpec `json:"bfd,omitempty"`
	// NodeToNodePassword turns on TCP MD5 on the node-to-node sessions.
	NodeToNodePassword string `json:"nodeToNodePassword,omitempty" secret:"true"`
	// Service ranges every node announces (ECMP at the ToR).
	ServiceClusterIPs      []ServiceCIDR `json:"serviceClusterIPs,omitempty"`
	ServiceExternalIPs     []ServiceCIDR `json:"serviceExternalIPs,omitempty"`
	ServiceLoadBalancerIPs []ServiceCIDR `json:"serviceLoadBalancerIPs,omitempty"`
	// Communities are attached to every prefix the node announces
	// ("AS:value", both 0-65535).
	Communities []string `json:"communities,omitempty"`
}

type GracefulRestartSpec struct {
	Enabled            *bool `json:"enabled,omitempty"`
	RestartTimeSeconds int   `json:"restartTimeSeconds,omitempty"`
}

const (
	DefaultASNumber         = 64512
	DefaultBGPPort          = 179
	DefaultGRRestartTime    = 120
	DefaultBlockSizeV4      = 26
	DefaultBlockSizeV6      = 122
	DefaultMaxBlocksPerHost = 20
	DefaultSingletonName    = "default"
	LabelNode               = "calyx.dev/node"
	LabelNamespace          = "calyx.dev/namespace"
	LabelPod                = "calyx.dev/pod"
	LabelOrchestrator       = "calyx.dev/orchestrator"
	// LabelServiceAccount is a Kubernetes pod's service account.
	LabelServiceAccount = "calyx.dev/serviceaccount"
	// LabelManagedBy marks what a controller wrote; it touches nothing else.
	LabelManagedBy           = "calyx.dev/managed-by"
	defaultNodeToNodeMesh    = true
	defaultAdvertiseBlocks   = true
	defaultGracefulRestartOn = true
)

func (b *BGPConfig) GetMeta() *Metadata { return &b.Metadata }

// EffectiveASNumber is the configured AS or the default.
func (s *BGPConfigSpec) EffectiveASNumber() uint32 {
	if s == nil || s.ASNumber == 0 {
		return DefaultASNumber
	}
	return s.ASNumber
}

// MeshEnabled reports whether the node-to-node mesh is on (default true).
func (s *BGPConfigSpec) MeshEnabled() bool {
	if s == nil || s.NodeToNodeMesh == nil {
		return defaultNodeToNodeMesh
	}
	return *s.NodeToNodeMesh
}

// EffectiveListenPort is the configured port or 179.
func (s *BGPConfigSpec) EffectiveListenPort() int {
	if s == nil || s.ListenPort == 0 {
		return DefaultBGPPort
	}
	return s.ListenPort
}

// GracefulRestartEnabled is on unless explicitly disabled.
func (s *BGPConfigSpec) GracefulRestartEnabled() bool {
	if s == nil || s.GracefulRestart == nil || s.GracefulRestart.Enabled == nil {
		return defaultGracefulRestartOn
	}
	return *s.GracefulRestart.Enabled
}

// GracefulRestartTime is the restart time in seconds (default 120).
func (s *BGPConfigSpec) GracefulRestartTime() int {
	if s == nil || s.GracefulRestart == nil || s.GracefulRestart.RestartTimeSeconds == 0 {
		return DefaultGRRestartTime
	}
	return s.GracefulRestart.RestartTimeSeconds
}

// BlocksAdvertised reports whether blocks are announced as aggregates.
func (s *BGPConfigSpec) BlocksAdvertised() bool {
	if s == nil || s.AdvertiseBlocks == nil {
		return defaultAdvertiseBlocks
	}
	return *s.AdvertiseBlocks
}

// ---- Node -------------------------------------------------------------------

// Node is a host running calyx-agent; the agent registers its own.
type Node struct {
	TypeMeta `json:",inline"`
	Metadata Metadata `json:"metadata"`
	Spec     NodeSpec `json:"spec"`
}

type NodeSpec struct {
	// Address is the node's IPv4 address: BGP source and next hop.
	Address string `json:"address"`
	// IPv6Address is the next hop for IPv6 routes (optional).
	IPv6Address string `json:"ipv6Address,omitempty"`
	// ASNumber overrides BGPConfig.asNumber for this node.
	ASNumber uint32 `json:"asNumber,omitempty"`
	// RouterID overrides the BGP router ID (default: Address).
	RouterID string `json:"routerID,omitempty"`
	// RouteReflectorClusterID makes this node a route reflector.
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`
}

func (n *Node) GetMeta() *Metadata { return &n.Metadata }

// ---- BGPPeer ----------------------------------------------------------------

// BGPPeer is an external BGP peer such as a top-of-rack router.
type BGPPeer struct {
	TypeMeta `json:",inline"`
	Metadata Metadata    `json:"metadata"`
	Spec     BGPPeerSpec `json:"spec"`
}

type BGPPeerSpec struct {
	PeerIP   string `json:"peerIP"`
	ASNumber uint32 `json:"asNumber"`
	// Node limits the peering to one node; NodeSelector to the nodes it
	// selects; both empty means every node peers.
	Node         string `json:"node,omitempty"`
	NodeSelector string `json:"nodeSelector,omitempty"`
	// Password enables TCP MD5 authentication (RFC 2385).
	Password string `json:"password,omitempty" secret:"true"`
	// BFD runs on the session (single hop).
	BFD *BFDSpec `json:"bfd,omitempty"`
	// MaxPrefixes tears the session down when the peer sends more
	// prefixes than this, per address family (0: no limit).
	MaxPrefixes uint32 `json:"maxPrefixes,omitempty"`
	// Filters names BGPFilters applied in order to what is learned from
	// and announced to the peer.
	Filters []string `json:"filters,omitempty"`
}

func (p *BGPPeer) GetMeta() *Metadata { return &p.Metadata }

// ---- IPPool -----------------------------------------------------------------

// IPPool is a range workload addresses are allocated from, in blocks.
type IPPool struct {
	TypeMeta `json:",inline"`
	Metadata Metadata   `json:"metadata"`
	Spec     IPPoolSpec `json:"spec"`
}

type IPPoolSpec struct {
	CIDR string `json:"cidr"`
	// BlockSize is the prefix length of the blocks nodes claim (26 / 122).
	BlockSize   int  `json:"blockSize,omitempty"`
	NATOutgoing bool `json:"natOutgoing,omitempty"`
	Disabled    bool `json:"disabled,omitempty"`
	// NodeSelector limits which nodes allocate from the pool (empty: all).
	NodeSelector string `json:"nodeSelector,omitempty"`
}

func (p *IPPool) GetMeta() *Metadata { return &p.Metadata }

// EffectiveBlockSize is the configured block size or the family default.
func (s *IPPoolSpec) EffectiveBlockSize() int {
	if s.BlockSize != 0 {
		return s.BlockSize
	}
	if strings.Contains(s.CIDR, ":") {
		return DefaultBlockSizeV6
	}
	return DefaultBlockSizeV4
}

// ---- IPAMConfig -------------------------------------------------------------

// IPAMConfig holds cluster-wide IPAM settings; the only object is "default".
type IPAMConfig struct {
	TypeMeta `json:",inline"`
	Metadata Metadata       `json:"metadata"`
	Spec     IPAMConfigSpec `json:"spec"`
}

type IPAMConfigSpec struct {
	// StrictAffinity forbids borrowing addresses from other nodes' blocks.
	StrictAffinity bool `json:"strictAffinity,omitempty"`
	// MaxBlocksPerHost limits the blocks one node may claim (default 20).
	MaxBlocksPerHost int `json:"maxBlocksPerHost,omitempty"`
}

func (c *IPAMConfig) GetMeta() *Metadata { return &c.Metadata }

// EffectiveMaxBlocksPerHost is the configured limit or 20.
func (s *IPAMConfigSpec) EffectiveMaxBlocksPerHost() int {
	if s == nil || s.MaxBlocksPerHost == 0 {
		return DefaultMaxBlocksPerHost
	}
	return s.MaxBlocksPerHost
}

// ---- WorkloadEndpoint -------------------------------------------------------

// WorkloadEndpoint is one interface of one workload, written by the agent on
// CNI ADD and deleted on DEL. Its labels are what policy selectors match.
type WorkloadEndpoint struct {
	TypeMeta `json:",inline"`
	Metadata Metadata             `json:"metadata"`
	Spec     WorkloadEndpointSpec `json:"spec"`
}

type WorkloadEndpointSpec struct {
	Node string `json:"node"`
	// Workload is the workload's name: "namespace/pod" under Kubernetes,
	// else the container ID.
	Workload    string `json:"workload"`
	ContainerID string `json:"containerID,omitempty"`
	// InterfaceName is the host side of the veth (cx...).
	InterfaceName string `json:"interfaceName"`
	// ContainerInterface is the name inside the workload (eth0).
	ContainerInterface string `json:"containerInterface,omitempty"`
	// Network is the CNI network name (the config's "name") the
	// attachment was made for: CNI GC of a network touches only its own.
	Network string `json:"network,omitempty"`
	MAC     string `json:"mac,omitempty"`
	// IPNetworks are the workload's addresses as /32 or /128 CIDRs.
	IPNetworks []string `json:"ipNetworks"`
	// Profiles name Profile resources whose labelsToApply the endpoint
	// inherits (under Kubernetes: its namespace's, "kns.<namespace>").
	Profiles []string `json:"profiles,omitempty"`
	// Ports are the workload's named ports, which rules may name.
	Ports []EndpointPort `json:"ports,omitempty"`
}

func (w *WorkloadEndpoint) GetMeta() *Metadata { return &w.Metadata }

// ---- Profile ----------------------------------------------------------------

// Profile carries labels that every WorkloadEndpoint naming it in
// spec.profiles inherits, so that a change of them (a Kubernetes
// namespace's labels) is one write, not one per endpoint.
type Profile struct {
	TypeMeta `json:",inline"`
	Metadata Metadata    `json:"metadata"`
	Spec     ProfileSpec `json:"spec"`
}

type ProfileSpec struct {
	// LabelsToApply are added to the labels of the endpoints that name
	// the profile; they win over an endpoint's own label of the same key.
	LabelsToApply map[string]string `json:"labelsToApply,omitempty"`
}

func (p *Profile) GetMeta() *Metadata { return &p.Metadata }

// ---- Policy -----------------------------------------------------------------

// Policy is an ordered list of rules applied to the endpoints its selector
// matches.
type Policy struct {
	TypeMeta `json:",inline"`
	Metadata Metadata   `json:"metadata"`
	Spec     PolicySpec `json:"spec"`
}

type PolicyType string

const (
	PolicyTypeIngress PolicyType = "Ingress"
	PolicyTypeEgress  PolicyType = "Egress"
)

type PolicySpec struct {
	// Order: lower applies first; unset sorts after every set order.
	Order    *float64     `json:"order,omitempty"`
	Selector string       `json:"selector"`
	Types    []PolicyType `json:"types,omitempty"`
	Ingress  []Rule       `json:"ingress,omitempty"`
	Egress   []Rule       `json:"egress,omitempty"`
}

// EffectiveTypes returns Types, or when unset what Kubernetes infers: Ingress,
// plus Egress when egress rules are present.
func (s *PolicySpec) EffectiveTypes() []PolicyType {
	if len(s.Types) > 0 {
		return s.Types
	}
	t := []PolicyType{PolicyTypeIngress}
	if len(s.Egress) > 0 {
		t = append(t, PolicyTypeEgress)
	}
	return t
}

// AppliesTo reports whether the policy covers the direction.
func (s *PolicySpec) AppliesTo(t PolicyType) bool {
	for _, x := range s.EffectiveTypes() {
		if x == t {
			return true
		}
	}
	return false
}

func (p *Policy) GetMeta() *Metadata { return &p.Metadata }

type Action string

const (
	ActionAllow Action = "Allow"
	ActionDeny  Action = "Deny"
	ActionLog   Action = "Log"
	ActionPass  Action = "Pass"
)

type Rule struct {
	Action Action `json:"action"`
	// Protocol: tcp, udp, icmp, icmpv6, sctp, or a number 1-255.
	Protocol *Protocol `json:"protocol,omitempty"`
	// IPVersion limits the rule to 4 or 6.
	IPVersion   int        `json:"ipVersion,omitempty"`
	ICMP        *ICMPMatch `json:"icmp,omitempty"`
	Source      EntityRule `json:"source,omitempty"`
	Destination EntityRule `json:"destination,omitempty"`
}

type ICMPMatch struct {
	Type *int `json:"type,omitempty"`
	Code *int `json:"code,omitempty"`
}

type EntityRule struct {
	Selector    string   `json:"selector,omitempty"`
	NotSelector string   `json:"notSelector,omitempty"`
	Nets        []string `json:"nets,omitempty"`
	NotNets     []string `json:"notNets,omitempty"`
	Ports       []Port   `json:"ports,omitempty"`
	NotPorts    []Port   `json:"notPorts,omitempty"`
}

// IsZero reports whether the entity rule matches everything.
func (e *EntityRule) IsZero() bool {
	return e.Selector == "" && e.NotSelector == "" && len(e.Nets) == 0 && len(e.NotNets) == 0 &&
		len(e.Ports) == 0 && len(e.NotPorts) == 0
}

// SortedLabelKeys returns the label keys in order, for stable output.
func SortedLabelKeys(l map[string]string) []string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
