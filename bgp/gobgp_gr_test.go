package bgp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// learnedFromRIB is B's view of the paths from one peer: prefix → stale.
func staleness(t *testing.T, s *testSpeaker, from fmt.Stringer) map[string]bool {
	t.Helper()
	rib, err := s.RIB(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range rib {
		if e.Peer.String() == from.String() {
			out[e.Prefix.String()] = e.Stale
		}
	}
	return out
}

// A graceful Close ends the sessions without Cease: the peer keeps A's
// routes (stale) while A is away. The restarted A announces the restart,
// gets its initial sync, and the peer then drops only what A no longer
// announces. A normal Close, by contrast, withdraws at once.
func TestGoBGPGracefulRestart(t *testing.T) {
	n := loopbackNet(2)
	port := freePort(t, n...)
	opts := speakerOpts{gr: true, restartTime: 60 * time.Second}
	a := startSpeaker(t, n[0], port, opts)
	b := startSpeaker(t, n[1], port, opts)
	a.setPeers(t, a.peerTo(b, PeerMesh))
	b.setPeers(t, b.peerTo(a, PeerMesh))
	a.advertise(t,
		Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: a.addr},
		Advertisement{Prefix: pfx("10.244.9.0/26"), NextHop: a.addr})
	b.advertise(t, Advertisement{Prefix: pfx("10.244.2.0/26"), NextHop: b.addr})
	both := routes("10.244.1.0/26", addrs(a.addr), "10.244.9.0/26", addrs(a.addr))
	testutil.Eventually(t, 20*time.Second, "B learns A's routes", func() error { return routesEqual(b.subscribed(), both) })
	testutil.Eventually(t, 10*time.Second, "A learns B's route", func() error {
		return routesEqual(a.subscribed(), routes("10.244.2.0/26", addrs(b.addr)))
	})

	batches := func() int { a.mu.Lock(); defer a.mu.Unlock(); return a.batches }
	before := batches()
	if err := a.Close(true); err != nil {
		t.Fatal(err)
	}
	if got := a.subscribed(); len(got) != 1 || batches() != before {
		t.Errorf("A's subscriber got updates during Close (table %v)", got)
	}
	testutil.Eventually(t, 10*time.Second, "B notices A is gone", func() error {
		st, err := b.peerState(a.addr)
		if err != nil {
			return err
		}
		if st.State == StateEstablished {
			return fmt.Errorf("still established")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	learned, err := b.Learned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := routesEqual(learned, both); err != nil {
		t.Fatalf("B dropped A's routes after a graceful close (a Cease was sent?): %v", err)
	}
	if st := staleness(t, b, a.addr); !st["10.244.1.0/26"] || !st["10.244.9.0/26"] {
		t.Errorf("B's paths from A are not marked stale: %v", st)
	}

	// A comes back, now announcing one prefix only.
	a2 := startSpeaker(t, n[0], port, opts)
	select {
	case <-a2.InitialSyncDone():
		t.Fatal("initial sync done before any peer was configured")
	default:
	}
	a2.setPeers(t, a2.peerTo(b, PeerMesh))
	a2.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: a2.addr})
	select {
	case <-a2.InitialSyncDone():
	case <-time.After(30 * time.Second):
		t.Fatal("restarted A: initial sync not done")
	}
	// At the initial sync the RIB holds what B re-sent before its
	// End-of-RIB (the agent's sweep reads the RIB for this reason); the
	// subscription, fed by a watch of its own, may deliver it a moment
	// later.
	learnedAtSync, err := a2.Learned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := routesEqual(learnedAtSync, routes("10.244.2.0/26", addrs(b.addr))); err != nil {
		t.Errorf("restarted A's RIB at initial sync: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "restarted A's subscriber gets B's route", func() error {
		return routesEqual(a2.subscribed(), routes("10.244.2.0/26", addrs(b.addr)))
	})
	testutil.Eventually(t, 10*time.Second, "B keeps the re-announced route, drops the other", func() error {
		return routesEqual(b.subscribed(), routes("10.244.1.0/26", addrs(a.addr)))
	})
	if st := staleness(t, b, a.addr); st["10.244.1.0/26"] {
		t.Errorf("re-announced path still stale at B")
	}

	// A normal Close sends Cease: B withdraws at once.
	if err := a2.Close(false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "B withdraws A's routes after a normal close", func() error {
		return routesEqual(b.subscribed(), routes())
	})
}
