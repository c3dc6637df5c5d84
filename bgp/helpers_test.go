package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// testLogger logs through t.Log while the test runs and drops everything
// afterwards: GoBGP's goroutines outlive a closed server, and t.Log after
// the test has ended panics. CALYX_TEST_LOG=debug|info shows more.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop) // registered first, so it runs last
	level := slog.LevelWarn
	switch os.Getenv("CALYX_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// loopbackNet returns n addresses 127.A.B.1..n on a random A.B, so that
// concurrent runs of these tests do not meet.
func loopbackNet(n int) []netip.Addr {
	a, b := byte(100+rand.IntN(100)), byte(1+rand.IntN(250))
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, a, b, byte(i + 1)})
	}
	return out
}

// freePort returns a TCP port that the test's speakers and BIRDs can bind
// on addrs, and keeps it theirs: it holds a listener on 127.0.0.1 at that
// port until the test ends. While that listener exists, nothing can bind
// the port on a wildcard address (0.0.0.0 or [::]): the kernel refuses a
// wildcard bind that overlaps a listening socket. The test's own addresses
// (loopbackNet's random 127.A.B.x) are nobody else's, so between this call
// and the components' binds no other process can take the port from them.
// Each address is also tried once, for a holder that was there before.
func freePort(t testing.TB, addrs ...netip.Addr) int {
	t.Helper()
	for range 50 {
		port := 20000 + rand.IntN(12000) // below the ephemeral range
		hold, err := net.Listen("tcp", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)).String())
		if err != nil {
			continue
		}
		ok := true
		for _, a := range addrs {
			if a == netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
				t.Fatal("freePort: 127.0.0.1 holds the reservation; give the test its own loopback addresses")
			}
			l, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if !ok {
			hold.Close()
			continue
		}
		t.Cleanup(func() { hold.Close() })
		return port
	}
	t.Fatal("no free port found")
	return 0
}

// testPolicy is the tests' cluster: their blocks are in 10.244.0.0/16 (and
// fd00:10:244::/48), their services in 10.96.0.0/12.
var testPolicy = Policy{
	PoolPrefixes:    []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")},
	ServicePrefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
}

// testSpeaker is a started GoBGP speaker on one loopback address.
type testSpeaker struct {
	Speaker
	addr netip.Addr
	port int
	asn  uint32

	mu      sync.Mutex
	learned map[netip.Prefix][]netip.Addr // as told by Subscribe
	batches int
}

type speakerOpts struct {
	asn         uint32
	gr          bool
	restartTime time.Duration
	families    []Family
	noSubscribe bool
	// policy replaces testPolicy (a ToR played by a speaker has no pools).
	policy *Policy
}

func startSpeaker(t testing.TB, addr netip.Addr, port int, o speakerOpts) *testSpeaker {
	t.Helper()
	if o.asn == 0 {
		o.asn = 64512
	}
	s := &testSpeaker{Speaker: NewGoBGP(testLogger(t).With("speaker", addr.String())), addr: addr, port: port, asn: o.asn,
		learned: map[netip.Prefix][]netip.Addr{}}
	if !o.noSubscribe {
		s.Subscribe(s.onUpdate)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rid := addr
	if !addr.Is4() {
		rid = netip.MustParseAddr("10.255.255.1")
	}
	err := s.Start(ctx, Global{
		ASN:             o.asn,
		RouterID:        rid,
		ListenPort:      port,
		ListenAddresses: []string{addr.String()},
		GracefulRestart: GracefulRestart{Enabled: o.gr, RestartTime: o.restartTime},
		Families:        o.families,
	})
	if err != nil {
		t.Fatalf("start speaker %s: %v", addr, err)
	}
	t.Cleanup(func() { s.Close(false) })
	pol := testPolicy
	if o.policy != nil {
		pol = *o.policy
	}
	if err := s.SetPolicy(ctx, pol); err != nil {
		t.Fatalf("speaker %s: SetPolicy: %v", addr, err)
	}
	return s
}

func (s *testSpeaker) onUpdate(u LearnedUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	for p, nhs := range u.Routes {
		if len(nhs) == 0 {
			if _, ok := s.learned[p]; !ok {
				panic(fmt.Sprintf("withdrawal of %s that was never delivered", p))
			}
			delete(s.learned, p)
			continue
		}
		s.learned[p] = nhs
	}
}

// subscribed is a copy of what Subscribe delivered so far.
func (s *testSpeaker) subscribed() map[netip.Prefix][]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[netip.Prefix][]netip.Addr, len(s.learned))
	for p, nhs := range s.learned {
		out[p] = nhs
	}
	return out
}

// peerTo is a Peer entry for another test speaker.
func (s *testSpeaker) peerTo(o *testSpeaker, typ PeerType) Peer {
	return Peer{Address: o.addr, ASN: o.asn, Type: typ, Port: o.port, LocalAddress: s.addr, Passive: o.addr.Less(s.addr)}
}

func (s *testSpeaker) setPeers(t testing.TB, peers ...Peer) {
	t.Helper()
	if err := s.SetPeers(context.Background(), peers); err != nil {
		t.Fatalf("%s: SetPeers: %v", s.addr, err)
	}
}

func (s *testSpeaker) advertise(t testing.TB, advs ...Advertisement) {
	t.Helper()
	if err := s.SetAdvertisements(context.Background(), advs); err != nil {
		t.Fatalf("%s: SetAdvertisements: %v", s.addr, err)
	}
}

// peerState is the session state of one peer.
func (s *testSpeaker) peerState(addr netip.Addr) (PeerStatus, error) {
	sts, err := s.PeerStatus(context.Background())
	if err != nil {
		return PeerStatus{}, err
	}
	for _, st := range sts {
		if st.Address == addr {
			return st, nil
		}
	}
	return PeerStatus{}, fmt.Errorf("peer %s not configured", addr)
}

func (s *testSpeaker) waitEstablished(t testing.TB, addr netip.Addr, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, fmt.Sprintf("%s: session to %s established", s.addr, addr), func() error {
		st, err := s.peerState(addr)
		if err != nil {
			return err
		}
		if st.State != StateEstablished {
			return fmt.Errorf("state %s", st.State)
		}
		return nil
	})
}

// routesEqual compares learned tables, printing the difference.
func routesEqual(got, want map[netip.Prefix][]netip.Addr) error {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("missing %s via %v", p, w))
			continue
		}
		if fmt.Sprint(g) != fmt.Sprint(w) {
			diffs = append(diffs, fmt.Sprintf("%s via %v, want %v", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s via %v", p, g))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s", strings.Join(diffs, "; "))
	}
	return nil
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func routes(kv ...any) map[netip.Prefix][]netip.Addr {
	out := map[netip.Prefix][]netip.Addr{}
	for i := 0; i < len(kv); i += 2 {
		out[pfx(kv[i].(string))] = kv[i+1].([]netip.Addr)
	}
	return out
}

func addrs(as ...netip.Addr) []netip.Addr { return as }
