package datastore

import (
	"strings"
	"testing"
)

func bgpFilter(spec BGPFilterSpec) *BGPFilter {
	return &BGPFilter{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindBGPFilter}, Metadata: Metadata{Name: "f"}, Spec: spec}
}

func TestBGPFilterValidation(t *testing.T) {
	pl := func(min, max int) *BGPFilterPrefixLength { return &BGPFilterPrefixLength{Min: min, Max: max} }
	good := bgpFilter(BGPFilterSpec{
		ImportV4: []BGPFilterRule{
			{Action: FilterReject, MatchOperator: MatchIn, CIDR: "10.244.0.0/16", PrefixLength: pl(24, 32)},
			{Action: FilterAccept, MatchOperator: MatchEqual, CIDR: "0.0.0.0/0"},
			{Action: FilterReject}, // everything else
		},
		ExportV6: []BGPFilterRule{{Action: FilterAccept, MatchOperator: MatchNotIn, CIDR: "fd00::/8", PrefixLength: pl(0, 64)}},
	})
	if err := Validate(good); err != nil {
		t.Fatalf("valid filter refused: %v", err)
	}
	for _, tc := range []struct {
		rule BGPFilterRule
		v6   bool
		want string
	}{
		{BGPFilterRule{MatchOperator: MatchIn, CIDR: "10.0.0.0/8"}, false, "spec.importV4[0].action: is required"},
		{BGPFilterRule{Action: "Allow"}, false, `"Allow" is not an action`},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: "Within", CIDR: "10.0.0.0/8"}, false, `"Within" is not an operator`},
		{BGPFilterRule{Action: FilterAccept, CIDR: "10.0.0.0/8"}, false, "matchOperator: is required with cidr"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn}, false, "cidr: is required with matchOperator In"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn, CIDR: "10.0.0.1/8"}, false, "host bits set"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn, CIDR: "10.0.0/8"}, false, "is not a CIDR"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn, CIDR: "fd00::/8"}, false, "not an IPv4 prefix"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn, CIDR: "10.0.0.0/8"}, true, "not an IPv6 prefix"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn, CIDR: "10.0.0.0/8", PrefixLength: pl(28, 24)}, false, "min 28 is greater than max 24"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn, CIDR: "10.0.0.0/8", PrefixLength: pl(4, 0)}, false, "prefixLength.min: 4 is out of range for 10.0.0.0/8 (8-32)"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchIn, CIDR: "10.0.0.0/8", PrefixLength: pl(0, 33)}, false, "prefixLength.max: 33 is out of range"},
		{BGPFilterRule{Action: FilterAccept, MatchOperator: MatchEqual, CIDR: "10.0.0.0/8", PrefixLength: pl(8, 9)}, false, "only goes with matchOperator In or NotIn"},
		{BGPFilterRule{Action: FilterAccept, PrefixLength: pl(8, 9)}, false, "needs cidr"},
	} {
		spec := BGPFilterSpec{ImportV4: []BGPFilterRule{tc.rule}}
		if tc.v6 {
			spec = BGPFilterSpec{ImportV6: []BGPFilterRule{tc.rule}}
		}
		err := Validate(bgpFilter(spec))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.rule, err, tc.want)
		}
	}
}

func TestBGPPeerAndConfigValidation(t *testing.T) {
	peer := func(mod func(*BGPPeerSpec)) *BGPPeer {
		p := &BGPPeer{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindBGPPeer}, Metadata: Metadata{Name: "tor"},
			Spec: BGPPeerSpec{PeerIP: "198.18.0.254", ASNumber: 65000}}
		mod(&p.Spec)
		return p
	}
	cfg := func(mod func(*BGPConfigSpec)) *BGPConfig {
		c := &BGPConfig{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindBGPConfig}, Metadata: Metadata{Name: "default"}}
		mod(&c.Spec)
		return c
	}
	ok := []Resource{
		peer(func(s *BGPPeerSpec) {
			s.BFD = &BFDSpec{Enabled: true, IntervalMs: 50, Multiplier: 255}
			s.MaxPrefixes, s.Filters = 1000, []string{"a", "b"}
		}),
		cfg(func(s *BGPConfigSpec) {
			s.BFD = &BFDSpec{Enabled: true, IntervalMs: 60000, Multiplier: 2}
			s.ServiceClusterIPs = []ServiceCIDR{{CIDR: "10.96.0.0/12"}}
			s.ServiceLoadBalancerIPs = []ServiceCIDR{{CIDR: "fd00:96::/112"}}
			s.Communities = []string{"64512:100", "0:65535"}
			s.NodeToNodePassword = "mesh-secret"
		}),
	}
	for _, r := range ok {
		if err := Validate(r); err != nil {
			t.Errorf("%s refused: %v", Describe(r), err)
		}
	}
	for _, tc := range []struct {
		r    Resource
		want string
	}{
		{peer(func(s *BGPPeerSpec) { s.BFD = &BFDSpec{Enabled: true, IntervalMs: 49} }), "spec.bfd.intervalMs: 49 is out of range (50-60000)"},
		{peer(func(s *BGPPeerSpec) { s.BFD = &BFDSpec{Enabled: true, IntervalMs: 60001} }), "spec.bfd.intervalMs: 60001 is out of range"},
		{peer(func(s *BGPPeerSpec) { s.BFD = &BFDSpec{Enabled: true, Multiplier: 1} }), "spec.bfd.multiplier: 1 is out of range (2-255)"},
		{peer(func(s *BGPPeerSpec) { s.BFD = &BFDSpec{Multiplier: 256} }), "spec.bfd.multiplier: 256 is out of range"},
		{peer(func(s *BGPPeerSpec) { s.Filters = []string{"Bad_Name"} }), `spec.filters[0]: "Bad_Name" is not a BGPFilter name`},
		{peer(func(s *BGPPeerSpec) { s.Filters = []string{"a", "a"} }), `spec.filters[1]: "a" is listed twice`},
		{cfg(func(s *BGPConfigSpec) { s.BFD = &BFDSpec{IntervalMs: 10} }), "spec.bfd.intervalMs: 10 is out of range"},
		{cfg(func(s *BGPConfigSpec) { s.ServiceExternalIPs = []ServiceCIDR{{CIDR: "10.96.0.1/12"}} }), "spec.serviceExternalIPs[0].cidr"},
		{cfg(func(s *BGPConfigSpec) { s.ServiceClusterIPs = []ServiceCIDR{{}} }), "spec.serviceClusterIPs[0].cidr: is required"},
		{cfg(func(s *BGPConfigSpec) { s.Communities = []string{"64512:65536"} }), "spec.communities[0]"},
		{cfg(func(s *BGPConfigSpec) { s.Communities = []string{"no-export"} }), "is not a community"},
		{cfg(func(s *BGPConfigSpec) { s.NodeToNodePassword = strings.Repeat("x", 81) }), "spec.nodeToNodePassword: is 81 characters"},
	} {
		err := Validate(tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
}

func TestValidateFilterRefs(t *testing.T) {
	p := &BGPPeer{TypeMeta: TypeMeta{Kind: KindBGPPeer}, Metadata: Metadata{Name: "tor"}, Spec: BGPPeerSpec{Filters: []string{"known", "missing"}}}
	err := ValidateFilterRefs([]*BGPPeer{p}, map[string]bool{"known": true})
	if err == nil || err.Error() != `BGPPeer "tor": spec.filters[1]: BGPFilter "missing" does not exist` {
		t.Fatalf("err = %v", err)
	}
	if err := ValidateFilterRefs([]*BGPPeer{p}, map[string]bool{"known": true, "missing": true}); err != nil {
		t.Fatal(err)
	}
}

func TestParseCommunity(t *testing.T) {
	if c, err := ParseCommunity("64512:100"); err != nil || c != 64512<<16|100 {
		t.Fatalf("64512:100 = %d, %v", c, err)
	}
}
