package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// birdBench is what one run of measureBIRDToSubscribe saw.
type birdBench struct {
	prefixes    int
	sessionUp   time.Duration // SetPeers → first learned prefix delivered
	firstToLast time.Duration // first → last prefix delivered through Subscribe
	batches     int
	learnedCall time.Duration // one Learned() over the full table
	statusCall  time.Duration // one PeerStatus() with the full table held
}

func (r birdBench) String() string {
	return fmt.Sprintf("%d prefixes: first→last %s (%.0f prefixes/s) in %d batches; SetPeers→first %s; Learned() %s; PeerStatus() %s",
		r.prefixes, r.firstToLast.Round(time.Millisecond), float64(r.prefixes)/r.firstToLast.Seconds(), r.batches,
		r.sessionUp.Round(time.Millisecond), r.learnedCall.Round(time.Millisecond), r.statusCall.Round(time.Microsecond))
}

// measureBIRDToSubscribe starts a BIRD announcing n /32s and a speaker, and
// times their arrival through Subscribe.
func measureBIRDToSubscribe(tb testing.TB, n int) birdBench {
	tb.Helper()
	addr := loopbackNet(2)
	port, birdPort := freePort(tb, addr[0]), freePort(tb, addr[1])
	static := make([]string, n)
	for i := range static {
		static[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String() + "/32"
	}
	bird := startBIRD(tb, birdConfig(addr[1], static, nil, birdSession{name: "calyx", local: addr[1], localPort: birdPort,
		localAS: 65000, neighbor: addr[0], neighborPort: port, neighborAS: 64512, gracefulRestart: true}))
	testutil.Eventually(tb, 60*time.Second, "BIRD loaded its routes", func() error {
		out, err := bird.birdc("show", "route", "count")
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("%d of %d routes", n, n); !strings.Contains(out, want) {
			return fmt.Errorf("%s", out)
		}
		return nil
	})

	s := NewGoBGP(testLogger(tb))
	type mark struct {
		at    time.Time
		total int
	}
	marks := make(chan mark, 1<<16)
	total := 0
	s.Subscribe(func(u LearnedUpdate) {
		total += len(u.Routes) // announcements only: nothing is withdrawn here
		marks <- mark{time.Now(), total}
	})
	ctx := context.Background()
	if err := s.Start(ctx, Global{ASN: 64512, RouterID: addr[0], ListenPort: port, ListenAddresses: []string{addr[0].String()},
		GracefulRestart: GracefulRestart{Enabled: true}}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close(false) })
	start := time.Now()
	if err := s.SetPeers(ctx, []Peer{{Address: addr[1], ASN: 65000, Type: PeerExternal, Port: birdPort, LocalAddress: addr[0]}}); err != nil {
		tb.Fatal(err)
	}
	var first, last time.Time
	batches := 0
	timeout := time.After(120 * time.Second)
	for last.IsZero() {
		select {
		case m := <-marks:
			batches++
			if first.IsZero() {
				first = m.at
			}
			if m.total >= n {
				last = m.at
			}
		case <-timeout:
			tb.Fatalf("only %d of %d prefixes after 120 s", total, n)
		}
	}
	if path := os.Getenv("CALYX_BGP_HEAPPROFILE"); path != "" {
		writeHeapProfile(tb, path) // with the whole table held
	}
	t0 := time.Now()
	learned, err := s.Learned(ctx)
	if err != nil || len(learned) != n {
		tb.Fatalf("Learned: %d prefixes, %v", len(learned), err)
	}
	learnedCall := time.Since(t0)
	t0 = time.Now()
	st, err := s.PeerStatus(ctx)
	if err != nil || len(st) != 1 || st[0].PrefixesReceived != uint64(n) {
		tb.Fatalf("PeerStatus: %+v, %v; want one peer with %d prefixes received", st, err, n)
	}
	return birdBench{prefixes: n, sessionUp: first.Sub(start), firstToLast: last.Sub(first), batches: batches,
		learnedCall: learnedCall, statusCall: time.Since(t0)}
}

// BenchmarkBIRD100kToSubscribe: go test ./bgp -run ^$ -bench BIRD100k -benchtime 1x
func BenchmarkBIRD100kToSubscribe(b *testing.B) {
	for range b.N {
		r := measureBIRDToSubscribe(b, 100_000)
		b.ReportMetric(r.firstToLast.Seconds(), "s-first-to-last")
		b.ReportMetric(float64(r.prefixes)/r.firstToLast.Seconds(), "prefixes/s")
		b.ReportMetric(r.learnedCall.Seconds(), "s-Learned")
		b.ReportMetric(r.statusCall.Seconds(), "s-PeerStatus")
		b.Log(r)
	}
}

// TestBIRD100kPrefixes is the same measurement as a test, run only with
// CALYX_BGP_BENCH=1 (it takes several seconds and a lot of CPU).
func TestBIRD100kPrefixes(t *testing.T) {
	if os.Getenv("CALYX_BGP_BENCH") == "" {
		t.Skip("set CALYX_BGP_BENCH=1 to measure 100k prefixes from BIRD")
	}
	t.Log(measureBIRDToSubscribe(t, 100_000))
}

// writeHeapProfile writes the live heap to path (after a GC).
func writeHeapProfile(tb testing.TB, path string) {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		tb.Fatal(err)
	}
}
