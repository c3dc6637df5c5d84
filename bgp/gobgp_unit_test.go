package bgp

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"google.golang.org/protobuf/types/known/anypb"
)

// learnedPath builds a GoBGP path as a best-path watch delivers it.
func learnedPath(t *testing.T, prefix, nextHop, from string, mods ...func(*api.Path)) *api.Path {
	t.Helper()
	p, err := apiPath(pfx(prefix), ip(nextHop))
	if err != nil {
		t.Fatal(err)
	}
	p.NeighborIp = from
	for _, m := range mods {
		m(p)
	}
	return p
}

func withdrawn(p *api.Path) { p.IsWithdraw = true }

func originator(t *testing.T, id string) func(*api.Path) {
	return func(p *api.Path) {
		a, err := anypb.New(&api.OriginatorIdAttribute{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		p.Pattrs = append(p.Pattrs, a)
	}
}

func TestBestPathsToRoutes(t *testing.T) {
	paths := []*api.Path{
		learnedPath(t, "10.244.1.0/26", "10.0.0.2", "10.0.0.2"),
		// ECMP: two best paths, listed out of order, one next hop twice.
		learnedPath(t, "10.96.0.10/32", "10.0.0.3", "10.0.0.3"),
		learnedPath(t, "10.96.0.10/32", "10.0.0.2", "10.0.0.2"),
		learnedPath(t, "10.96.0.10/32", "10.0.0.3", "10.0.0.9"),
		// Our own path: GoBGP reports no source.
		learnedPath(t, "10.244.0.0/26", "10.0.0.1", "<nil>"),
		// Reflected back to us.
		learnedPath(t, "10.244.7.0/26", "10.0.0.1", "10.0.0.5", originator(t, "10.0.0.1")),
		// Withdrawn.
		learnedPath(t, "10.244.2.0/26", "10.0.0.2", "10.0.0.2", withdrawn),
		// IPv6 through MP_REACH.
		learnedPath(t, "fd00:10:244:1::/122", "fd00::2", "10.0.0.2"),
		// Not a unicast prefix: ignored.
		{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_FLOW_SPEC_UNICAST}},
	}
	got := bestPathsToRoutes(paths, "10.0.0.1")
	want := map[string]string{
		"10.244.1.0/26":       "[10.0.0.2]",
		"10.96.0.10/32":       "[10.0.0.2 10.0.0.3]",
		"10.244.0.0/26":       "[]",
		"10.244.7.0/26":       "[]",
		"10.244.2.0/26":       "[]",
		"fd00:10:244:1::/122": "[fd00::2]",
	}
	if len(got) != len(want) {
		t.Errorf("got %d prefixes, want %d: %v", len(got), len(want), got)
	}
	for p, w := range want {
		nhs, ok := got[pfx(p)]
		if !ok {
			t.Errorf("%s missing", p)
			continue
		}
		if g := fmt.Sprint(nhs); g != w {
			t.Errorf("%s via %s, want %s", p, g, w)
		}
	}
}

func TestDestinationEntriesMarksECMP(t *testing.T) {
	aspath := func(asns ...uint32) func(*api.Path) {
		return func(p *api.Path) {
			a, _ := anypb.New(&api.AsPathAttribute{Segments: []*api.AsSegment{{Type: api.AsSegment_AS_SEQUENCE, Numbers: asns}}})
			p.Pattrs = append(p.Pattrs, a)
			p.SourceAsn = asns[0]
		}
	}
	d := &api.Destination{Prefix: "10.96.0.0/24", Paths: []*api.Path{
		learnedPath(t, "10.96.0.0/24", "10.0.0.2", "10.0.0.2", aspath(65000)),
		learnedPath(t, "10.96.0.0/24", "10.0.0.3", "10.0.0.3", aspath(65001)),
		learnedPath(t, "10.96.0.0/24", "10.0.0.4", "10.0.0.4", aspath(65002, 65003)),
	}}
	var got []string
	for _, e := range destinationEntries(d, 64512) {
		got = append(got, fmt.Sprintf("%s best=%v as=%v", e.NextHop, e.Best, e.ASPath))
	}
	want := "10.0.0.2 best=true as=[65000]; 10.0.0.3 best=true as=[65001]; 10.0.0.4 best=false as=[65002 65003]"
	if g := strings.Join(got, "; "); g != want {
		t.Errorf("got  %s\nwant %s", g, want)
	}
}

func TestGoBGPLoggerAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := newGoBGPLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if l.GetLevel() != gobgplog.InfoLevel {
		t.Errorf("level %v, want info", l.GetLevel())
	}
	l.Warn("cannot set TTL (255) for TCPListener", gobgplog.Fields{"Key": "x"})
	l.Debug("noise", nil)
	l.Warn("Peer Down", gobgplog.Fields{"Topic": "Peer", "Key": "10.0.0.2", gobgplog.FieldFacility: "x"})
	out := buf.String()
	if strings.Contains(out, "TTL") || strings.Contains(out, "noise") {
		t.Errorf("debug-level messages logged at info:\n%s", out)
	}
	if !strings.Contains(out, `level=WARN msg="Peer Down" component=gobgp Key=10.0.0.2 Topic=Peer`) || strings.Contains(out, "_facility") {
		t.Errorf("warning not logged as expected:\n%s", out)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Panic did not panic")
			}
		}()
		l.Panic("code logic bug", nil)
	}()
}
