package lab

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Addresses and numbers of the fabric. The benchmarking range 198.18.0.0/15
// is never routed on the Internet, so a lab cannot clash with a real network.
const (
	FabricPrefixLen = 24
	FabricGateway   = "198.18.0.254" // the fabric bridge; every host's default route
	EtcdIP          = "198.18.0.250"
	TorIP           = "198.18.0.253"
	EtcdPort        = 2379
	DefaultPool     = "10.244.0.0/16"
	// NodeAS is the AS every host uses (BGPConfig.asNumber).
	NodeAS = 64512
	// TorAS is the BIRD top-of-rack router's AS.
	TorAS = 65000
	// TorStaticRoute is announced by the ToR so that tests can see routes
	// learned from an external peer reach the hosts' kernels.
	TorStaticRoute = "203.0.113.0/24"

	// The IPv6 side of the fabric (Options.IPv6), on the same bridge: a
	// unique local /64 whose last group mirrors the IPv4 last octet.
	FabricPrefixLen6 = 64
	FabricGateway6   = "fd18::fe"
	TorIPv6          = "fd18::fd"
	// DefaultPool6 is the IPv6 workload IPPool of a dual-stack lab.
	DefaultPool6 = "fd00:10:244::/56"
	// TorStaticRoute6 is the ToR's IPv6 counterpart of TorStaticRoute.
	TorStaticRoute6 = "2001:db8:ffff::/48"
	// ReflectorClusterID is written on the Nodes that reflect.
	ReflectorClusterID = "244.0.0.1"
	// ReflectorLabel marks the Nodes that reflect.
	ReflectorLabel = "calyx.dev/route-reflector"
	// MaxHosts keeps host addresses below the fixed ones (.250 and up).
	MaxHosts = 200
	// DefaultDirRoot is where the CLI puts labs when --dir is not given.
	DefaultDirRoot = "/run/calyx-lab"
)

// EtcdMetricsAddr serves etcd's /metrics inside the etcd namespace.
const EtcdMetricsAddr = "127.0.0.1:2381"

// EtcdEndpoint is the URL of the first (or only) etcd member: TLS, with
// client certificates from the lab's CA (see pki.go). Clients should get
// every member's: Lab.EtcdEndpoints.
var EtcdEndpoint = "https://" + EtcdIP + ":" + strconv.Itoa(EtcdPort)

// Prefix is the name prefix of every kernel object of the lab in dir:
// "cxl" + 6 hex digits of a hash of the absolute path + "-". Two labs in two
// directories never share a prefix, and Down finds a crashed lab's leftovers
// by it.
func Prefix(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = filepath.Clean(dir)
	}
	sum := sha256.Sum256([]byte(abs))
	return "cxl" + hex.EncodeToString(sum[:])[:6] + "-"
}

// names derives every namespace name of a lab from its prefix.
type names struct{ prefix string }

func (n names) fabric() string              { return n.prefix + "fabric" }
func (n names) etcd() string                { return n.prefix + "etcd" }
func (n names) tor() string                 { return n.prefix + "tor" }
func (n names) host(i int) string           { return n.prefix + "h" + strconv.Itoa(i) }
func (n names) workload(name string) string { return n.prefix + "w-" + name }

// etcdMember is member i's namespace: member 1 keeps the single etcd's
// name (other parts, the kube-apiserver among them, live there).
func (n names) etcdMember(i int) string {
	if i == 1 {
		return n.etcd()
	}
	return n.etcd() + strconv.Itoa(i)
}

// HostName is the node name of the i-th host (1-based): "host1".
func HostName(i int) string { return "host" + strconv.Itoa(i) }

// HostIP is the fabric address of the i-th host (1-based).
func HostIP(i int) string { return "198.18.0." + strconv.Itoa(i) }

// HostIPv6 is the IPv6 fabric address of the i-th host (1-based) in a
// dual-stack lab: fd18::<i>, the index written in decimal digits (so host
// 12 is fd18::12), which never collides with the gateway or the ToR.
func HostIPv6(i int) string { return "fd18::" + strconv.Itoa(i) }

// fabricNet6 is the IPv6 fabric prefix, which pools must not overlap.
var fabricNet6 = netip.MustParsePrefix("fd18::/64")

// hostIndex parses "host3" into 3.
func hostIndex(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "host")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 1 || strconv.Itoa(i) != rest {
		return 0, false
	}
	return i, true
}

// workloadNameRE keeps workload names usable in namespace names, container
// IDs and Kubernetes-style labels.
var workloadNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// reservedNames are exec targets that a workload may not shadow.
var reservedNames = map[string]bool{"fabric": true, "etcd": true, "tor": true}

// etcdMemberNameRE: etcd1, etcd2, ... are exec targets too.
var etcdMemberNameRE = regexp.MustCompile(`^etcd[0-9]+$`)

func validateWorkloadName(name string) error {
	if !workloadNameRE.MatchString(name) {
		return fmt.Errorf("workload name %q: use 1-40 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	if reservedNames[name] || etcdMemberNameRE.MatchString(name) {
		return fmt.Errorf("workload name %q is reserved (it names a lab namespace)", name)
	}
	if _, ok := hostIndex(name); ok {
		return fmt.Errorf("workload name %q is reserved (it names a host)", name)
	}
	return nil
}

// defaultWorkloadName names the i-th workload (1-based) that Up puts on a
// host: "h2-w1".
func defaultWorkloadName(host, i int) string { return fmt.Sprintf("h%d-w%d", host, i) }

// defaultWorkloadLabels are the labels of the workloads Up creates; the
// demo's policy selects on "app".
func defaultWorkloadLabels(i int) map[string]string {
	return map[string]string{"app": "w" + strconv.Itoa(i), "lab-test": "yes"}
}
