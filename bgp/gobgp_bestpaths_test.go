package bgp

import (
	"fmt"
	"net/netip"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
)

// Events fold into one map, a later event superseding an earlier one for
// the same prefix; equal single next hops share one slice.
func TestBestPathDecoderMergesEvents(t *testing.T) {
	d := bestPathDecoder{routerID: "10.0.0.1"}
	got := map[netip.Prefix][]netip.Addr{}
	d.merge(got, []*api.Path{learnedPath(t, "10.96.0.1/32", "10.0.0.2", "10.0.0.2")})
	d.merge(got, []*api.Path{learnedPath(t, "10.96.0.2/32", "10.0.0.2", "10.0.0.2")})
	d.merge(got, []*api.Path{
		learnedPath(t, "10.96.0.3/32", "10.0.0.3", "10.0.0.3"),
		learnedPath(t, "10.96.0.3/32", "10.0.0.2", "10.0.0.2"),
	})
	d.merge(got, []*api.Path{learnedPath(t, "10.96.0.1/32", "10.0.0.2", "10.0.0.2", withdrawn)})
	want := map[string]string{
		"10.96.0.1/32": "[]",
		"10.96.0.2/32": "[10.0.0.2]",
		"10.96.0.3/32": "[10.0.0.2 10.0.0.3]",
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for p, w := range want {
		if g := fmt.Sprint(got[pfx(p)]); g != w {
			t.Errorf("%s: %s, want %s", p, g, w)
		}
	}
	// A large event (the watch's first: the whole table) decodes the same.
	var paths []*api.Path
	for i := range 300 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 97, byte(i >> 8), byte(i)}), 32).String()
		paths = append(paths, learnedPath(t, p, "10.0.0.2", "10.0.0.2"), learnedPath(t, p, "10.0.0.4", "10.0.0.4"))
	}
	big := map[netip.Prefix][]netip.Addr{}
	d.merge(big, paths)
	if len(big) != 300 || fmt.Sprint(big[pfx("10.97.1.0/32")]) != "[10.0.0.2 10.0.0.4]" {
		t.Fatalf("large event: %d prefixes, 10.97.1.0/32 via %v", len(big), big[pfx("10.97.1.0/32")])
	}
	a := got[pfx("10.96.0.2/32")]
	c := map[netip.Prefix][]netip.Addr{}
	d.merge(c, []*api.Path{learnedPath(t, "10.96.0.9/32", "10.0.0.2", "10.0.0.2")})
	if &c[pfx("10.96.0.9/32")][0] != &a[0] {
		t.Error("equal single next hops were not shared")
	}
}

func TestParseAddrMatchesNetip(t *testing.T) {
	for _, s := range []string{"10.0.0.1", "0.0.0.0", "255.255.255.255", "198.18.0.253", "fd00::1", "::ffff:10.0.0.1",
		"256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1..2.3", "", "1.2.3.4 ", "a.b.c.d", "1234.1.1.1"} {
		want, werr := netip.ParseAddr(s)
		got, ok := parseAddr([]byte(s))
		if ok != (werr == nil) || (ok && got != want) {
			t.Errorf("parseAddr(%q) = %v, %v; netip says %v, %v", s, got, ok, want, werr)
		}
	}
}
