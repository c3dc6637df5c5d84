package routes

import (
	"context"
	"github.com/vishvananda/netlink"
	"net/netip"
	"testing"
)

// routes100k returns 100,000 /32 device routes through cxa0.
func routes100k() []Route {
	const n = 100_000
	out := make([]Route, 0, n)
	base := netip.MustParseAddr("10.128.0.0")
	a := base
	for range n {
		out = append(out, Route{Dst: netip.PrefixFrom(a, 32), Type: RouteDevice, LinkName: "cxa0"})
		a = a.Next()
	}
	return out
}

// BenchmarkApply100k measures one Apply that adds 100k /32 routes (LAB-NOTES:
// 0.84 s for 100k Handle.RouteAdd with one reused handle).
func BenchmarkApply100k(b *testing.B) {
	ns := newTestNS(b, "bench")
	tbl := newTestTable(b, ns, Options{})
	ctx := context.Background()
	set := routes100k()
	for b.Loop() {
		b.StopTimer()
		if err := tbl.SetRoutes(nil); err != nil {
			b.Fatal(err)
		}
		if err := tbl.Apply(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := tbl.SetRoutes(set); err != nil {
			b.Fatal(err)
		}
		if err := tbl.Apply(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(set))*float64(b.N)/b.Elapsed().Seconds(), "routes/s")
}

// BenchmarkApplyUnchanged100k measures an Apply that finds all 100k routes
// already right: a full re-read of the kernel and a compare, no writes.
func BenchmarkApplyUnchanged100k(b *testing.B) {
	ns := newTestNS(b, "bench")
	tbl := newTestTable(b, ns, Options{})
	ctx := context.Background()
	if err := tbl.SetRoutes(routes100k()); err != nil {
		b.Fatal(err)
	}
	if err := tbl.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	writes := tbl.Stats().Writes()
	for b.Loop() {
		if err := tbl.Apply(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if tbl.Stats().Writes() != writes {
		b.Fatalf("unchanged Apply wrote")
	}
}

// BenchmarkRawRouteAdd100k is the reference: 100k Handle.RouteAdd calls on
// one handle with prebuilt requests, no table logic.
func BenchmarkRawRouteAdd100k(b *testing.B) {
	ns := newTestNS(b, "bench")
	tbl := newTestTable(b, ns, Options{})
	h := tbl.k.(*netlinkKernel).h
	link, err := h.LinkByName("cxa0")
	if err != nil {
		b.Fatal(err)
	}
	set := routes100k()
	nrs := make([]*netlink.Route, len(set))
	for i, r := range set {
		nrs[i] = toNetlink(r.Dst, wantKernel(r, link.Attrs().Index), tbl.table, ProtoWorkload)
	}
	for b.Loop() {
		b.StopTimer()
		if err := tbl.Apply(context.Background()); err != nil { // deletes the previous round
			b.Fatal(err)
		}
		b.StartTimer()
		for _, nr := range nrs {
			if err := h.RouteAdd(nr); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(set))*float64(b.N)/b.Elapsed().Seconds(), "routes/s")
}

// BenchmarkApply100kWatched is BenchmarkApply100k with Run watching, so the
// kernel's 100k route events come back while the table writes.
func BenchmarkApply100kWatched(b *testing.B) {
	ns := newTestNS(b, "bench")
	tbl := newTestTable(b, ns, Options{})
	runTable(b, tbl)
	ctx := context.Background()
	set := routes100k()
	for b.Loop() {
		b.StopTimer()
		if err := tbl.SetRoutes(nil); err != nil {
			b.Fatal(err)
		}
		if err := tbl.Apply(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := tbl.SetRoutes(set); err != nil {
			b.Fatal(err)
		}
		if err := tbl.Apply(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(set))*float64(b.N)/b.Elapsed().Seconds(), "routes/s")
	st := tbl.Stats()
	b.Logf("stats after the run: %+v", st)
}
