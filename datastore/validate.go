package datastore

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/calyx-net/calyx/datastore/selector"
)

// FieldError is one problem with one field of one resource.
type FieldError struct {
	Field  string // dotted path, e.g. "spec.ingress[0].source.nets[1]"
	Reason string
}

// ValidationError lists every problem found in one resource. Error() prints
// one line per problem, each naming the resource and the field.
type ValidationError struct {
	Resource string // e.g. `IPPool "pool-a"`, or `document 2 (line 14)`
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		if p.Field == "" {
			lines[i] = fmt.Sprintf("%s: %s", e.Resource, p.Reason)
		} else {
			lines[i] = fmt.Sprintf("%s: %s: %s", e.Resource, p.Field, p.Reason)
		}
	}
	return strings.Join(lines, "\n")
}

// validator accumulates problems; the check helpers record and return
// whether the value was fine so callers can skip dependent checks.
type validator struct {
	problems []FieldError
}

func (v *validator) add(field, format string, args ...any) {
	v.problems = append(v.problems, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Describe names a resource for messages: `IPPool "pool-a"`.
func Describe(r Resource) string {
	name := r.GetMeta().Name
	if name == "" {
		return string(r.GetKind()) + " (no name)"
	}
	return fmt.Sprintf("%s %q", r.GetKind(), name)
}

// Validate checks one resource on its own (header, name, labels, spec). It
// returns a *ValidationError listing every problem, or nil.
func Validate(r Resource) error {
	v := &validator{}
	tm := r.typeMeta()
	if tm.APIVersion != APIVersion {
		v.add("apiVersion", "must be %q, got %q", APIVersion, tm.APIVersion)
	}
	validateMeta(v, r)
	r.validateSpec(v)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Resource: Describe(r), Problems: v.problems}
}

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelName        = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValue       = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	workloadIfName   = regexp.MustCompile(`^cx[a-z0-9]{1,13}$`)
)

func validateMeta(v *validator, r Resource) {
	m := r.GetMeta()
	k := r.GetKind()
	switch {
	case m.Name == "":
		v.add("metadata.name", "is required")
	case k.IsSingleton() && m.Name != DefaultSingletonName:
		v.add("metadata.name", "%s is a singleton: the name must be %q, got %q", k, DefaultSingletonName, m.Name)
	case k == KindNode || k == KindProfile || k == KindPolicy:
		// Node names are host names, which may be fully qualified; Profile
		// and Policy names may carry dots like Kubernetes names do
		// ("kns.<namespace>", "knp.<namespace>.<name>").
		if len(m.Name) > 253 || !dns1123Subdomain.MatchString(m.Name) {
			v.add("metadata.name", "%q is not a valid %s name (lower-case DNS-1123 subdomain: a-z, 0-9, '-' and '.', at most 253 characters)", m.Name, strings.ToLower(string(k)))
		}
	default:
		if len(m.Name) > 63 || !dns1123Label.MatchString(m.Name) {
			v.add("metadata.name", "%q is not a DNS-1123 label (lower-case a-z, 0-9 and '-', starting and ending with a letter or digit, at most 63 characters)", m.Name)
		}
	}
	for _, key := range SortedLabelKeys(m.Labels) {
		if err := ValidateLabel(key, m.Labels[key]); err != nil {
			v.add("metadata.labels", "%v", err)
		}
	}
}

// ValidateLabel checks a label key (optional DNS prefix + "/" + name) and
// value with Kubernetes' rules.
func ValidateLabel(key, value string) error {
	name := key
	if prefix, rest, ok := strings.Cut(key, "/"); ok {
		if prefix == "" || len(prefix) > 253 || !dns1123Subdomain.MatchString(prefix) {
			return fmt.Errorf("label key %q: prefix %q is not a DNS-1123 subdomain", key, prefix)
		}
		name = rest
	}
	if name == "" || len(name) > 63 || !labelName.MatchString(name) {
		return fmt.Errorf("label key %q is invalid (name part: at most 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending alphanumeric)", key)
	}
	if len(value) > 63 || !labelValue.MatchString(value) {
		return fmt.Errorf("label %q: value %q is invalid (at most 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending alphanumeric)", key, value)
	}
	return nil
}

// ---- field checkers -----------------------------------------------------

func (v *validator) ipv4(field, s string, required bool) (netip.Addr, bool) {
	if s == "" {
		if required {
			v.add(field, "is required")
		}
		return netip.Addr{}, !required
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		v.add(field, "%q is not an IPv4 address", s)
		return netip.Addr{}, false
	}
	return a, true
}

func (v *validator) ip(field, s string, required bool) (netip.Addr, bool) {
	if s == "" {
		if required {
			v.add(field, "is required")
		}
		return netip.Addr{}, !required
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		v.add(field, "%q is not an IP address", s)
		return netip.Addr{}, false
	}
	return a, true
}

// cidr checks a CIDR and that it has no host bits set.
func (v *validator) cidr(field, s string) (netip.Prefix, bool) {
	if s == "" {
		v.add(field, "is required")
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		v.add(field, "%q is not a CIDR (want e.g. 10.244.0.0/16 or fd00::/48)", s)
		return netip.Prefix{}, false
	}
	if p.Masked() != p {
		v.add(field, "%q has host bits set (did you mean %s?)", s, p.Masked())
		return netip.Prefix{}, false
	}
	return p, true
}

func (v *validator) asNumber(field string, asn uint32, required bool) {
	if asn == 0 && required {
		v.add(field, "is required (1-4294967295)")
	}
	if asn == 23456 {
		v.add(field, "23456 is AS_TRANS, reserved for 4-byte AS transition (RFC 6793)")
	}
}

func (v *validator) selector(field, s string) {
	if s == "" {
		return
	}
	if _, err := selector.Parse(s); err != nil {
		v.add(field, "invalid selector: %v", err)
	}
}

// ---- per-kind spec validation -------------------------------------------

func (b *BGPConfig) validateSpec(v *validator) {
	s := &b.Spec
	v.asNumber("spec.asNumber", s.ASNumber, false)
	if s.ListenPort < 0 || s.ListenPort > 65535 {
		v.add("spec.listenPort", "%d is out of range (1-65535)", s.ListenPort)
	}
	if gr := s.GracefulRestart; gr != nil && (gr.RestartTimeSeconds < 0 || gr.RestartTimeSeconds > 4095) {
		v.add("spec.gracefulRestart.restartTimeSeconds", "%d is out of range (1-4095, the 12-bit field of RFC 4724)", gr.RestartTimeSeconds)
	}
	s.BFD.validate(v, "spec.bfd")
	v.md5Password("spec.nodeToNodePassword", s.NodeToNodePassword)
	v.serviceCIDRs("spec.serviceClusterIPs", s.ServiceClusterIPs)
	v.serviceCIDRs("spec.serviceExternalIPs", s.ServiceExternalIPs)
	v.serviceCIDRs("spec.serviceLoadBalancerIPs", s.ServiceLoadBalancerIPs)
	for i, c := range s.Communities {
		if _, err := ParseCommunity(c); err != nil {
			v.add(fmt.Sprintf("spec.communities[%d]", i), "%v", err)
		}
	}
}

func (n *Node) validateSpec(v *validator) {
	s := &n.Spec
	if a, ok := v.ipv4("spec.address", s.Address, true); ok && a.IsValid() {
		v.unicast("spec.address", a)
	}
	if s.IPv6Address != "" {
		if a, ok := v.ip("spec.ipv6Address", s.IPv6Address, false); ok && !a.Is6() {
			v.add("spec.ipv6Address", "%q is not an IPv6 address", s.IPv6Address)
		} else if ok {
			v.unicast("spec.ipv6Address", a)
		}
	}
	v.asNumber("spec.asNumber", s.ASNumber, false)
	if a, ok := v.ipv4("spec.routerID", s.RouterID, false); ok && a.IsValid() && (a.IsUnspecified() || a.IsMulticast()) {
		v.add("spec.routerID", "%s cannot be a BGP router ID (unspecified or multicast)", a)
	}
	v.ipv4("spec.routeReflectorClusterID", s.RouteReflectorClusterID, false)
}

func (p *BGPPeer) validateSpec(v *validator) {
	s := &p.Spec
	if a, ok := v.ip("spec.peerIP", s.PeerIP, true); ok && a.IsValid() && (a.IsUnspecified() || a.IsMulticast()) {
		v.add("spec.peerIP", "%s cannot be a BGP peer", a)
	}
	v.asNumber("spec.asNumber", s.ASNumber, true)
	if s.Node != "" && s.NodeSelector != "" {
		v.add("spec.nodeSelector", "set either node or nodeSelector, not both")
	}
	if s.Node != "" && !dns1123Subdomain.MatchString(s.Node) {
		v.add("spec.node", "%q is not a valid node name", s.Node)
	}
	v.selector("spec.nodeSelector", s.NodeSelector)
	v.md5Password("spec.password", s.Password)
	s.BFD.validate(v, "spec.bfd")
	seen := map[string]bool{}
	for i, f := range s.Filters {
		field := fmt.Sprintf("spec.filters[%d]", i)
		switch {
		case !dns1123Label.MatchString(f):
			v.add(field, "%q is not a BGPFilter name", f)
		case seen[f]:
			v.add(field, "%q is listed twice", f)
		}
		seen[f] = true
	}
}

// Block size limits, as Calico's: big enough to be worth a route, small
// enough that a block fits in one etcd value comfortably.
const (
	minBlockSizeV4, maxBlockSizeV4 = 20, 32
	minBlockSizeV6, maxBlockSizeV6 = 116, 128
)

func (p *IPPool) validateSpec(v *validator) {
	s := &p.Spec
	pfx, ok := v.cidr("spec.cidr", s.CIDR)
	if ok {
		lo, hi := minBlockSizeV4, maxBlockSizeV4
		if pfx.Addr().Is6() {
			lo, hi = minBlockSizeV6, maxBlockSizeV6
		}
		if bs := s.EffectiveBlockSize(); bs < lo || bs > hi {
			v.add("spec.blockSize", "%d is out of range for an IPv%d pool (%d-%d)", bs, family(pfx), lo, hi)
		} else if bs < pfx.Bits() {
			v.add("spec.blockSize", "/%d blocks do not fit in the pool %s (block size must be >= %d)", bs, pfx, pfx.Bits())
		}
		for _, r := range reservedRanges {
			if pfx.Overlaps(r.prefix) {
				v.add("spec.cidr", "%s overlaps %s %s, which cannot hold workload addresses", pfx, r.what, r.prefix)
			}
		}
	}
	v.selector("spec.nodeSelector", s.NodeSelector)
}

// reservedRanges can never hold workload addresses: a pool overlapping
// any of them is refused, however wide it is (0.0.0.0/1 contains 0/8 and
// 127/8 even though its first address is neither).
var reservedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\""},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (with the broadcast address)"},
	{netip.MustParsePrefix("::/127"), "unspecified and loopback"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// unicast refuses an address that cannot be a node's: BGP source, next hop
// and the target of every workload route on other nodes.
func (v *validator) unicast(field string, a netip.Addr) {
	switch {
	case a.IsUnspecified():
		v.add(field, "%s is the unspecified address, not a node's address", a)
	case a.IsLoopback():
		v.add(field, "%s is a loopback address, which no other node can reach", a)
	case a.IsMulticast():
		v.add(field, "%s is a multicast address, not a node's address", a)
	case a.IsLinkLocalUnicast():
		v.add(field, "%s is link-local, which cannot be a next hop for other nodes", a)
	case a.Is4() && (a.As4()[0] == 0 || a.As4()[0] >= 240):
		v.add(field, "%s is reserved (0.0.0.0/8, 240.0.0.0/4 or broadcast), not a node's address", a)
	}
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

func (c *IPAMConfig) validateSpec(v *validator) {
	if c.Spec.MaxBlocksPerHost < 0 {
		v.add("spec.maxBlocksPerHost", "%d is negative", c.Spec.MaxBlocksPerHost)
	}
}

func (w *WorkloadEndpoint) validateSpec(v *validator) {
	s := &w.Spec
	if s.Node == "" {
		v.add("spec.node", "is required")
	}
	if s.InterfaceName == "" {
		v.add("spec.interfaceName", "is required")
	} else if len(s.InterfaceName) > 15 {
		v.add("spec.interfaceName", "%q is longer than 15 characters (the kernel's limit)", s.InterfaceName)
	} else if !workloadIfName.MatchString(s.InterfaceName) {
		// The agent programs routes and policy on this interface: anything
		// but its own veths (eth0, lo, another CNI's) must not be named.
		v.add("spec.interfaceName", "%q is not a Calyx workload interface (cx followed by 1-13 lower-case letters or digits)", s.InterfaceName)
	}
	if s.MAC != "" {
		if _, err := net.ParseMAC(s.MAC); err != nil {
			v.add("spec.mac", "%q is not a MAC address", s.MAC)
		}
	}
	for i, n := range s.IPNetworks {
		field := fmt.Sprintf("spec.ipNetworks[%d]", i)
		if p, ok := v.cidr(field, n); ok && !p.IsSingleIP() {
			v.add(field, "%s must be a single address (/32 or /128)", n)
		}
	}
	for i, name := range s.Profiles {
		if len(name) > 253 || !dns1123Subdomain.MatchString(name) {
			v.add(fmt.Sprintf("spec.profiles[%d]", i), "%q is not a profile name (lower-case DNS-1123 subdomain)", name)
		}
	}
	seen := map[string]bool{}
	for i, p := range s.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		if err := ValidatePortName(p.Name); err != nil {
			v.add(field+".name", "%v", err)
		}
		if !p.Protocol.HasPorts() {
			v.add(field+".protocol", "%q has no ports (tcp, udp or sctp)", p.Protocol)
		}
		if p.Port == 0 {
			v.add(field+".port", "is required (1-65535)")
		}
		if key := p.Name + "/" + p.Protocol.String(); seen[key] {
			v.add(field, "port %s/%s appears twice", p.Name, p.Protocol)
		} else {
			seen[key] = true
		}
	}
}

func (p *Profile) validateSpec(v *validator) {
	for _, key := range SortedLabelKeys(p.Spec.LabelsToApply) {
		if err := ValidateProfileLabel(key, p.Spec.LabelsToApply[key]); err != nil {
			v.add("spec.labelsToApply", "%v", err)
		}
	}
}

// NamespaceLabelPrefix is put before each Kubernetes namespace label a
// namespace's Profile applies ("team" -> "pcns.team"), so that namespace
// labels never collide with the pod's own (as Calico spells it, so
// selectors written for Calico read the same).
const NamespaceLabelPrefix = "pcns."

// ValidateProfileLabel accepts what ValidateLabel accepts, and a valid
// label under NamespaceLabelPrefix (whose name part may be longer than 63
// by the prefix).
func ValidateProfileLabel(key, value string) error {
	if rest, ok := strings.CutPrefix(key, NamespaceLabelPrefix); ok && rest != "" {
		if err := ValidateLabel(rest, value); err != nil {
			return fmt.Errorf("namespace label %q: %w", key, err)
		}
		return nil
	}
	return ValidateLabel(key, value)
}

func (p *Policy) validateSpec(v *validator) {
	s := &p.Spec
	if s.Order != nil && (math.IsNaN(*s.Order) || math.IsInf(*s.Order, 0)) {
		v.add("spec.order", "must be a finite number")
	}
	v.selector("spec.selector", s.Selector)
	for i, t := range s.Types {
		if t != PolicyTypeIngress && t != PolicyTypeEgress {
			v.add(fmt.Sprintf("spec.types[%d]", i), "%q is not a policy type (Ingress or Egress)", t)
		}
	}
	if len(s.Types) > 0 {
		if len(s.Ingress) > 0 && !s.AppliesTo(PolicyTypeIngress) {
			v.add("spec.ingress", "has rules but types does not include Ingress")
		}
		if len(s.Egress) > 0 && !s.AppliesTo(PolicyTypeEgress) {
			v.add("spec.egress", "has rules but types does not include Egress")
		}
	}
	for i := range s.Ingress {
		s.Ingress[i].validate(v, fmt.Sprintf("spec.ingress[%d]", i))
	}
	for i := range s.Egress {
		s.Egress[i].validate(v, fmt.Sprintf("spec.egress[%d]", i))
	}
}

func (r *Rule) validate(v *validator, path string) {
	switch r.Action {
	case ActionAllow, ActionDeny, ActionLog, ActionPass:
	case "":
		v.add(path+".action", "is required (Allow, Deny, Log or Pass)")
	default:
		v.add(path+".action", "%q is not an action (Allow, Deny, Log or Pass)", r.Action)
	}
	if r.IPVersion != 0 && r.IPVersion != 4 && r.IPVersion != 6 {
		v.add(path+".ipVersion", "%d is not 4 or 6", r.IPVersion)
	}
	hasPorts := len(r.Source.Ports)+len(r.Source.NotPorts)+len(r.Destination.Ports)+len(r.Destination.NotPorts) > 0
	if hasPorts && (r.Protocol == nil || !r.Protocol.HasPorts()) {
		v.add(path+".protocol", "ports need protocol tcp, udp or sctp")
	}
	if src, dst := PortAlternatives(r.Source.Ports), PortAlternatives(r.Destination.Ports); max(src, 1)*max(dst, 1) > MaxRulesPerPolicyRule {
		v.add(path, "the port lists need %d iptables rules (%d source alternatives x %d destination alternatives, %d ports per multiport match, one per named port); at most %d per rule: split the rule or use ranges",
			max(src, 1)*max(dst, 1), src, dst, MultiportMax, MaxRulesPerPolicyRule)
	}
	if r.ICMP != nil {
		if r.Protocol == nil || !r.Protocol.IsICMP() {
			v.add(path+".icmp", "needs protocol icmp or icmpv6")
		}
		if r.ICMP.Type != nil && (*r.ICMP.Type < 0 || *r.ICMP.Type > 254) {
			v.add(path+".icmp.type", "%d is out of range (0-254)", *r.ICMP.Type)
		}
		if r.ICMP.Code != nil {
			if r.ICMP.Type == nil {
				v.add(path+".icmp.code", "needs icmp.type")
			}
			if *r.ICMP.Code < 0 || *r.ICMP.Code > 255 {
				v.add(path+".icmp.code", "%d is out of range (0-255)", *r.ICMP.Code)
			}
		}
	}
	if r.Protocol != nil && r.IPVersion != 0 {
		if (r.Protocol.Number() == 1 && r.IPVersion == 6) || (r.Protocol.Number() == 58 && r.IPVersion == 4) {
			v.add(path+".protocol", "%s does not go with ipVersion %d", r.Protocol, r.IPVersion)
		}
	}
	r.Source.validate(v, path+".source", r.IPVersion)
	r.Destination.validate(v, path+".destination", r.IPVersion)
}

func (e *EntityRule) validate(v *validator, path string, ipVersion int) {
	v.selector(path+".selector", e.Selector)
	v.selector(path+".notSelector", e.NotSelector)
	check := func(name string, nets []string) {
		for i, n := range nets {
			field := fmt.Sprintf("%s.%s[%d]", path, name, i)
			p, ok := v.cidrOrIP(field, n)
			if ok && ipVersion != 0 && family(p) != ipVersion {
				v.add(field, "%s is IPv%d but the rule has ipVersion %d", n, family(p), ipVersion)
			}
		}
	}
	check("nets", e.Nets)
	check("notNets", e.NotNets)
}

// cidrOrIP accepts "10.0.0.0/8" or a bare address (as /32 or /128), like
// Calico; host bits are an error because they are almost always a typo.
func (v *validator) cidrOrIP(field, s string) (netip.Prefix, bool) {
	if !strings.Contains(s, "/") {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			return netip.PrefixFrom(a, a.BitLen()), true
		}
	}
	return v.cidr(field, s)
}
