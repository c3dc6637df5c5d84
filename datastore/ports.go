package datastore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Port is one port, an inclusive range or a named port. In YAML/JSON it is
// a number (80) or a string ("80", "8000:8080", "http").
type Port struct {
	MinPort uint16
	MaxPort uint16
	// Name is a named port: it matches, on each endpoint, the port that the
	// endpoint's spec.ports gives that name (Kubernetes' named container
	// ports). MinPort and MaxPort are 0 then.
	Name string
}

// MultiportMax is how many ports one iptables multiport match takes (a
// range counts twice).
const MultiportMax = 15

// MaxRulesPerPolicyRule bounds the iptables rules one policy rule may
// become: source and destination port alternatives multiply, and a rule
// beyond this would make every endpoint's chain slow to load and match.
const MaxRulesPerPolicyRule = 1000

// PortAlternatives is how many iptables matches a positive port list
// becomes, any of which matching means the list matches: one per multiport
// chunk of numeric ports, one per named port. The renderer's product of
// source and destination alternatives is what MaxRulesPerPolicyRule bounds.
func PortAlternatives(ports []Port) int {
	n, used := 0, 0
	for _, p := range ports {
		if p.IsNamed() {
			n++
			continue
		}
		cost := 1
		if p.MinPort != p.MaxPort {
			cost = 2
		}
		if used == 0 || used+cost > MultiportMax {
			n++
			used = 0
		}
		used += cost
	}
	return n
}

// IsNamed reports whether the port is a name rather than numbers.
func (p Port) IsNamed() bool { return p.Name != "" }

func (p Port) String() string {
	if p.Name != "" {
		return p.Name
	}
	if p.MinPort == p.MaxPort {
		return strconv.Itoa(int(p.MinPort))
	}
	return fmt.Sprintf("%d:%d", p.MinPort, p.MaxPort)
}

func (p Port) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	if p.MinPort == p.MaxPort {
		return json.Marshal(int(p.MinPort))
	}
	return json.Marshal(p.String())
}

func (p *Port) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		return p.parse(n.String())
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("port must be a number or a \"min:max\" string, got %s", b)
	}
	return p.parse(s)
}

func (p *Port) parse(s string) error {
	s = strings.TrimSpace(s)
	if s != "" && (s[0] < '0' || s[0] > '9') {
		if err := ValidatePortName(s); err != nil {
			return err
		}
		*p = Port{Name: s}
		return nil
	}
	lo, hi, isRange := strings.Cut(s, ":")
	min, err := parsePortNumber(lo)
	if err != nil {
		return err
	}
	max := min
	if isRange {
		if max, err = parsePortNumber(hi); err != nil {
			return err
		}
		if min > max {
			return fmt.Errorf("port range %q: start is above end", s)
		}
	}
	p.MinPort, p.MaxPort = min, max
	return nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if n < 0 || n > 65535 {
		return 0, fmt.Errorf("port %d is out of range (0-65535)", n)
	}
	return uint16(n), nil
}

// ValidatePortName checks a port name with Kubernetes' rules for named
// container ports (IANA service names): 1-15 characters of a-z, 0-9 and
// '-', at least one letter, no '-' at either end nor two in a row.
func ValidatePortName(s string) error {
	bad := func(why string) error { return fmt.Errorf("port %q: %s", s, why) }
	if len(s) == 0 || len(s) > 15 {
		return bad("a port name is 1-15 characters long")
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(s)-1 || s[i-1] == '-' {
				return bad("a port name neither starts nor ends with '-' nor has two in a row")
			}
		default:
			return bad("is neither a number, a range \"min:max\" nor a port name (a-z, 0-9 and '-')")
		}
	}
	if !letter {
		return bad("a port name has at least one letter")
	}
	return nil
}

// EndpointPort is a named port of a workload (a Kubernetes container port
// with a name): rules that name it match this endpoint's number for it.
type EndpointPort struct {
	Name     string   `json:"name"`
	Protocol Protocol `json:"protocol"`
	Port     uint16   `json:"port"`
}

// Protocol is an IP protocol by name (tcp, udp, icmp, icmpv6, sctp) or
// number (1-255).
type Protocol struct {
	number uint8
}

var protocolNames = map[string]uint8{"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}

// ParseProtocol accepts a name (any case) or a number 1-255.
func ParseProtocol(s string) (Protocol, error) {
	if n, ok := protocolNames[strings.ToLower(s)]; ok {
		return Protocol{n}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 255 {
		return Protocol{}, fmt.Errorf("unknown protocol %q (want tcp, udp, icmp, icmpv6, sctp or a number 1-255)", s)
	}
	return Protocol{uint8(n)}, nil
}

// Number is the IP protocol number.
func (p Protocol) Number() uint8 { return p.number }

// String is the lower-case name when it has one, else the number.
func (p Protocol) String() string {
	for name, n := range protocolNames {
		if n == p.number {
			return name
		}
	}
	return strconv.Itoa(int(p.number))
}

// HasPorts reports whether port matches make sense for the protocol.
func (p Protocol) HasPorts() bool { return p.number == 6 || p.number == 17 || p.number == 132 }

// IsICMP reports whether the protocol is ICMP or ICMPv6.
func (p Protocol) IsICMP() bool { return p.number == 1 || p.number == 58 }

func (p Protocol) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

func (p *Protocol) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("protocol must be a name or a number, got %s", b)
		}
		s = n.String()
	}
	v, err := ParseProtocol(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}
