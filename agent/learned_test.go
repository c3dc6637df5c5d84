package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/calyx-net/calyx/bgp"
	"github.com/calyx-net/calyx/routes"
)

var selfAddrs = []netip.Addr{addr("198.18.0.1"), {}}

// bigLearned is n learned /32s via one next hop.
func bigLearned(n int, via string) *learnedPaths {
	m := newLearnedPaths(nil)
	for i := range n {
		m.Set(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), 32), []netip.Addr{addr(via)})
	}
	return m
}

func update(kv ...any) bgp.LearnedUpdate {
	u := bgp.LearnedUpdate{Routes: map[netip.Prefix][]netip.Addr{}}
	for i := 0; i < len(kv); i += 2 {
		var hops []netip.Addr
		for _, h := range kv[i+1].([]string) {
			hops = append(hops, addr(h))
		}
		u.Routes[pfx(kv[i].(string))] = hops
	}
	return u
}

func dsts(rs []routes.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

func TestLearnedSyncHandsOverOnlyWhatChanged(t *testing.T) {
	var s learnedSync
	paths := bigLearned(5000, "198.18.0.2")
	own := []routes.Route{{Dst: pfx("10.244.1.0/26"), Type: routes.RouteBlackhole}}

	h := s.handover(paths, nil, own, selfAddrs)
	if !h.full || len(h.routes) != 5000 {
		t.Fatalf("first handover: full=%v with %d routes, want the full 5000", h.full, len(h.routes))
	}
	if h := s.handover(paths, nil, own, selfAddrs); !h.empty() {
		t.Fatalf("nothing changed, yet handed over %+v", h)
	}

	// One prefix moves, one is withdrawn, one is new, one repeats as it was.
	s.mergeLearned(paths, update(
		"10.96.0.5/32", []string{"198.18.0.3"},
		"10.96.0.6/32", []string{},
		"10.97.0.0/24", []string{"198.18.0.2", "198.18.0.3"},
		"10.96.0.7/32", []string{"198.18.0.2"},
	))
	h = s.handoverMarked(paths, nil)
	if h.full {
		t.Fatal("a change of three prefixes made a full handover")
	}
	if got, want := dsts(h.routes), []string{"10.96.0.5/32 gateway via 198.18.0.3", "10.97.0.0/24 gateway via 198.18.0.2 via 198.18.0.3"}; !slices.Equal(got, want) {
		t.Errorf("routes handed over %v, want %v", got, want)
	}
	if !slices.Equal(h.deletes, []netip.Prefix{pfx("10.96.0.6/32")}) {
		t.Errorf("deletes %v, want [10.96.0.6/32]", h.deletes)
	}
	if h := s.handoverMarked(paths, nil); !h.empty() {
		t.Errorf("the marks were not cleared: %+v", h)
	}

	// A withdrawal of a prefix never learned, and a next hop that is
	// ourselves, change nothing in the table.
	s.mergeLearned(paths, update("10.98.0.0/24", []string{}, "10.99.0.0/24", []string{"198.18.0.1"}))
	h = s.handoverMarked(paths, nil)
	if len(h.routes) != 0 || !slices.Equal(h.deletes, []netip.Prefix{pfx("10.99.0.0/24")}) {
		t.Errorf("got %+v, want only a (harmless) delete of 10.99.0.0/24", h)
	}
}

func TestLearnedSyncFollowsOwnRoutes(t *testing.T) {
	var s learnedSync
	paths := bigLearned(100, "198.18.0.2")
	s.handover(paths, nil, nil, selfAddrs)

	// A local workload now owns 10.96.0.9/32: its learned route goes.
	own := []routes.Route{{Dst: pfx("10.96.0.9/32"), Type: routes.RouteDevice, LinkName: "cxa"}}
	h := s.handover(paths, nil, own, selfAddrs)
	if h.full || len(h.routes) != 0 || !slices.Equal(h.deletes, []netip.Prefix{pfx("10.96.0.9/32")}) {
		t.Fatalf("own route appeared: got %+v, want one delete", h)
	}
	// Learned changes handed over meanwhile still respect it.
	s.mergeLearned(paths, update("10.96.0.9/32", []string{"198.18.0.3"}))
	if h := s.handoverMarked(paths, nil); len(h.routes) != 0 {
		t.Fatalf("a learned route overrode the node's own: %+v", h)
	}
	// The workload leaves: the learned route comes back.
	h = s.handover(paths, nil, nil, selfAddrs)
	if got := dsts(h.routes); !slices.Equal(got, []string{"10.96.0.9/32 gateway via 198.18.0.3"}) || len(h.deletes) != 0 {
		t.Fatalf("own route gone: got %v / %v, want the learned route back", got, h.deletes)
	}
}

func TestLearnedSyncKeptRoutesAndReconcile(t *testing.T) {
	var s learnedSync
	paths := newLearnedPaths(nil)
	s.handover(paths, nil, nil, selfAddrs)

	// Routes kept over a restart arrive, then BGP re-learns one of them.
	kept := map[netip.Prefix][]netip.Addr{pfx("10.1.0.0/24"): {addr("198.18.0.2")}, pfx("10.2.0.0/24"): {addr("198.18.0.2")}}
	s.markAll(kept)
	if h := s.handover(paths, kept, nil, selfAddrs); len(h.routes) != 2 || h.full {
		t.Fatalf("kept routes: %+v, want both handed over", h)
	}
	s.mergeLearned(paths, update("10.1.0.0/24", []string{"198.18.0.3"}))
	if h := s.handoverMarked(paths, kept); len(h.routes) != 1 || h.routes[0].NextHops[0] != addr("198.18.0.3") {
		t.Fatalf("re-learned route: %+v, want BGP's next hop to win", h)
	}
	// The initial sync is over: what was not learned again goes.
	s.markAll(kept)
	h := s.handoverMarked(paths, nil)
	if !slices.Equal(h.deletes, []netip.Prefix{pfx("10.2.0.0/24")}) || len(h.routes) != 1 {
		t.Fatalf("sweep: %+v, want 10.2.0.0/24 deleted and 10.1.0.0/24 kept", h)
	}

	// A reconcile marks what differs from the RIB and forces a full set.
	rib := map[netip.Prefix][]netip.Addr{pfx("10.1.0.0/24"): {addr("198.18.0.3")}, pfx("10.3.0.0/24"): {addr("198.18.0.4")}}
	if !s.replaceLearned(paths, rib) {
		t.Fatal("reconcile found no difference")
	}
	s.forget()
	if h := s.handover(newLearnedPaths(rib), nil, nil, selfAddrs); !h.full || len(h.routes) != 2 {
		t.Fatalf("after reconcile: %+v, want a full set of 2", h)
	}
	if s.replaceLearned(newLearnedPaths(rib), map[netip.Prefix][]netip.Addr{pfx("10.1.0.0/24"): {addr("198.18.0.3")}, pfx("10.3.0.0/24"): {addr("198.18.0.4")}}) {
		t.Fatal("an equal RIB counted as a difference")
	}
}

// The incremental path end to end against a real table in a namespace: a
// change of one learned prefix in a table of 5000 writes one route.
func TestLearnedChangeOfOnePrefixWritesOneRoute(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "agent-lrn-" + hex.EncodeToString(b)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	run("ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	in := func(args ...string) { t.Helper(); run(append([]string{"ip", "netns", "exec", name}, args...)...) }
	in("ip", "link", "add", "lrn0", "type", "veth", "peer", "name", "lrn1")
	in("ip", "addr", "add", "198.18.0.1/24", "dev", "lrn0")
	in("ip", "link", "set", "lrn0", "up")
	in("ip", "link", "set", "lrn1", "up")

	tbl, err := routes.New(routes.Options{Protocol: routes.ProtoBGP, NetNSPath: "/run/netns/" + name})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	var s learnedSync
	paths := bigLearned(5000, "198.18.0.2")
	if err := s.handover(paths, nil, nil, selfAddrs).apply(tbl); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := tbl.Stats()
	if before.Added != 5000 {
		t.Fatalf("first apply: %+v, want 5000 added", before)
	}

	s.mergeLearned(paths, update("10.96.0.5/32", []string{"198.18.0.3"}))
	h := s.handoverMarked(paths, nil)
	if len(h.routes) != 1 || len(h.deletes) != 0 {
		t.Fatalf("handed over %d routes and %d deletes, want 1 route", len(h.routes), len(h.deletes))
	}
	if err := h.apply(tbl); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := tbl.Stats()
	if w := after.Writes() - before.Writes(); w != 1 || after.Replaced != 1 {
		t.Fatalf("a change of one prefix made %d writes (stats %+v), want 1 replace", w, after)
	}
	out, err := exec.Command("ip", "netns", "exec", name, "ip", "route", "show", "10.96.0.5/32", "proto", "202").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "via 198.18.0.3 dev lrn0") {
		t.Fatalf("kernel route: %q (%v), want via 198.18.0.3", out, err)
	}
}

// A RIB read races the subscription: what the subscription delivered
// while the read ran stays as the subscription said, since it will never
// send it again (the read came from a watch of its own, and may be older).
func TestLearnedSyncRIBReadKeepsWhatArrivedMeanwhile(t *testing.T) {
	var s learnedSync
	paths := newLearnedPaths(map[netip.Prefix][]netip.Addr{pfx("10.244.1.0/26"): {addr("198.18.0.2")}, pfx("10.244.3.0/26"): {addr("198.18.0.4")}})
	s.handover(paths, nil, nil, selfAddrs)

	s.beginRIBRead()
	// Delivered during the read: a new block, and a withdrawal.
	s.mergeLearned(paths, update("10.244.2.0/26", []string{"198.18.0.3"}, "10.244.3.0/26", []string{}))
	// The read saw neither.
	rib := map[netip.Prefix][]netip.Addr{pfx("10.244.1.0/26"): {addr("198.18.0.2")}, pfx("10.244.3.0/26"): {addr("198.18.0.4")}}
	s.endRIBRead(paths, rib)
	if _, ok := rib[pfx("10.244.2.0/26")]; !ok {
		t.Error("a block delivered during the RIB read was lost")
	}
	if _, ok := rib[pfx("10.244.3.0/26")]; ok {
		t.Error("a withdrawal delivered during the RIB read was undone")
	}
	if len(rib) != 2 {
		t.Errorf("after the read: %v", rib)
	}
	// Outside a read nothing is recorded, and a read that the subscription
	// did not overtake is taken as it is.
	paths = newLearnedPaths(rib)
	s.mergeLearned(paths, update("10.244.4.0/26", []string{"198.18.0.5"}))
	s.beginRIBRead()
	fresh := map[netip.Prefix][]netip.Addr{pfx("10.244.9.0/26"): {addr("198.18.0.9")}}
	if !s.endRIBRead(paths, fresh) || len(fresh) != 1 {
		t.Errorf("a read with nothing delivered meanwhile: %v", fresh)
	}
}
