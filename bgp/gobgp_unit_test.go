package bgp

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// learnedPath builds a GoBGP path as a best-path watch delivers it; from
// "" is a path this speaker originated.
func learnedPath(prefix, nextHop, from string, mods ...func(*apiutil.Path)) *apiutil.Path {
	p := nativePath(pfx(prefix), advertised{nextHop: ip(nextHop)})
	if from != "" {
		p.PeerAddress, p.PeerASN = ip(from), 64512
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func withdrawn(p *apiutil.Path) { p.Withdrawal = true }

func originator(id string) func(*apiutil.Path) {
	return func(p *apiutil.Path) {
		a, err := gobgp.NewPathAttributeOriginatorId(ip(id))
		if err != nil {
			panic(err)
		}
		p.Attrs = append(p.Attrs, a)
	}
}

func aspath(asns ...uint32) func(*apiutil.Path) {
	return func(p *apiutil.Path) {
		p.Attrs = append(p.Attrs, gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{
			gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, asns)}))
		p.PeerASN = asns[0]
	}
}

// routesOf folds events into a fresh table, as a subscriber does.
func routesOf(events ...[]*apiutil.Path) map[netip.Prefix][]netip.Addr {
	t := newBestTable()
	for _, ev := range events {
		t.foldChanges(decodeBest(nil, ev, ip("10.0.0.1")))
	}
	return t.routes()
}

func TestBestSetsFromASnapshot(t *testing.T) {
	got := routesOf([]*apiutil.Path{
		learnedPath("10.244.1.0/26", "10.0.0.2", "10.0.0.2"),
		// ECMP: two best paths, listed out of order, one next hop twice.
		learnedPath("10.96.0.10/32", "10.0.0.3", "10.0.0.3"),
		learnedPath("10.96.0.10/32", "10.0.0.2", "10.0.0.2"),
		learnedPath("10.96.0.10/32", "10.0.0.3", "10.0.0.9"),
		// Our own path: GoBGP reports no source.
		learnedPath("10.244.0.0/26", "10.0.0.1", ""),
		// Reflected back to us.
		learnedPath("10.244.7.0/26", "10.0.0.1", "10.0.0.5", originator("10.0.0.1")),
		// IPv6 through MP_REACH.
		learnedPath("fd00:10:244:1::/122", "fd00::2", "10.0.0.2"),
		// Not a unicast prefix: ignored.
		{Family: gobgp.RF_FS_IPv4_UC},
	})
	want := routes(
		"10.244.1.0/26", addrs(ip("10.0.0.2")),
		"10.96.0.10/32", addrs(ip("10.0.0.2"), ip("10.0.0.3")),
		"fd00:10:244:1::/122", addrs(ip("fd00::2")),
	)
	if err := routesEqual(got, want); err != nil {
		t.Error(err)
	}
}

// Later events are deltas: a path joins or leaves a prefix's best set.
// The fold reports only prefixes whose next hops changed, a withdrawn one
// as nil, and shares equal single next hops.
func TestBestSetDeltas(t *testing.T) {
	tb := newBestTable()
	fold := func(paths ...*apiutil.Path) map[netip.Prefix][]netip.Addr {
		return tb.foldChanges(decodeBest(nil, paths, ip("10.0.0.1")))
	}
	show := func(m map[netip.Prefix][]netip.Addr) string {
		var parts []string
		for _, p := range sortedKeys(m) {
			parts = append(parts, fmt.Sprintf("%s=%v", p, m[p]))
		}
		return strings.Join(parts, " ")
	}
	steps := []struct {
		paths []*apiutil.Path
		want  string
	}{
		{[]*apiutil.Path{learnedPath("10.96.0.1/32", "10.0.0.2", "10.0.0.2"), learnedPath("10.96.0.2/32", "10.0.0.2", "10.0.0.2")},
			"10.96.0.1/32=[10.0.0.2] 10.96.0.2/32=[10.0.0.2]"},
		// A second peer joins the set of .1: ECMP.
		{[]*apiutil.Path{learnedPath("10.96.0.1/32", "10.0.0.3", "10.0.0.3")}, "10.96.0.1/32=[10.0.0.2 10.0.0.3]"},
		// The same path again changes nothing.
		{[]*apiutil.Path{learnedPath("10.96.0.1/32", "10.0.0.3", "10.0.0.3")}, ""},
		// One leaves.
		{[]*apiutil.Path{learnedPath("10.96.0.1/32", "10.0.0.2", "10.0.0.2", withdrawn)}, "10.96.0.1/32=[10.0.0.3]"},
		// Our own path becomes best: GoBGP withdraws the learned one from
		// the set and adds ours; the prefix is no longer learned.
		{[]*apiutil.Path{learnedPath("10.96.0.2/32", "10.0.0.2", "10.0.0.2", withdrawn), learnedPath("10.96.0.2/32", "10.0.0.1", "")},
			"10.96.0.2/32=[]"},
		// A withdrawal of something never learned is nothing.
		{[]*apiutil.Path{learnedPath("10.96.0.9/32", "10.0.0.2", "10.0.0.2", withdrawn)}, ""},
		// A path replaced by its source with a new next hop.
		{[]*apiutil.Path{learnedPath("10.96.0.1/32", "10.0.0.7", "10.0.0.3")}, "10.96.0.1/32=[10.0.0.7]"},
	}
	for i, s := range steps {
		if got := show(fold(s.paths...)); got != s.want {
			t.Errorf("step %d: %q, want %q", i, got, s.want)
		}
	}
	a := fold(learnedPath("10.96.1.1/32", "10.0.0.5", "10.0.0.5"))
	b := fold(learnedPath("10.96.1.2/32", "10.0.0.5", "10.0.0.5"))
	if &a[pfx("10.96.1.1/32")][0] != &b[pfx("10.96.1.2/32")][0] {
		t.Error("equal single next hops were not shared")
	}
}

func sortedKeys(m map[netip.Prefix][]netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func TestDestinationEntriesMarksECMP(t *testing.T) {
	paths := []*apiutil.Path{
		learnedPath("10.96.0.0/24", "10.0.0.2", "10.0.0.2", aspath(65000)),
		learnedPath("10.96.0.0/24", "10.0.0.3", "10.0.0.3", aspath(65001)),
		learnedPath("10.96.0.0/24", "10.0.0.4", "10.0.0.4", aspath(65002, 65003)),
	}
	var got []string
	for _, e := range destinationEntries(paths, 64512) {
		got = append(got, fmt.Sprintf("%s best=%v as=%v", e.NextHop, e.Best, e.ASPath))
	}
	want := "10.0.0.2 best=true as=[65000]; 10.0.0.3 best=true as=[65001]; 10.0.0.4 best=false as=[65002 65003]"
	if g := strings.Join(got, "; "); g != want {
		t.Errorf("got  %s\nwant %s", g, want)
	}
}

func TestGoBGPLoggerQuietsExpectedMessages(t *testing.T) {
	var buf bytes.Buffer
	l := goBGPLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	l.Warn("cannot set TTL (255) for TCPListener", "Key", "x")
	l.Debug("noise")
	l.Warn("Peer Down", "Topic", "Peer", "Key", "10.0.0.2")
	out := buf.String()
	if strings.Contains(out, "TTL") || strings.Contains(out, "noise") {
		t.Errorf("debug-level messages logged at info:\n%s", out)
	}
	if !strings.Contains(out, `level=WARN msg="Peer Down" component=gobgp Topic=Peer Key=10.0.0.2`) {
		t.Errorf("warning not logged as expected:\n%s", out)
	}
}
