package bgp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// Three in-process speakers on loopback: A and C peer with B. Routes
// advertised by A reach B with A's next hop, through Subscribe and
// Learned; withdrawing from the set withdraws at B; a prefix announced by
// both A and C is an ECMP route at B; our own routes are never "learned".
func TestGoBGPAdvertiseLearnWithdrawECMP(t *testing.T) {
	n := loopbackNet(3)
	port := freePort(t, n...)
	a := startSpeaker(t, n[0], port, speakerOpts{gr: true})
	b := startSpeaker(t, n[1], port, speakerOpts{gr: true})
	c := startSpeaker(t, n[2], port, speakerOpts{gr: true})
	a.setPeers(t, a.peerTo(b, PeerMesh))
	c.setPeers(t, c.peerTo(b, PeerMesh))
	b.setPeers(t, b.peerTo(a, PeerMesh), b.peerTo(c, PeerMesh))
	b.waitEstablished(t, a.addr, 20*time.Second)
	b.waitEstablished(t, c.addr, 20*time.Second)

	for _, s := range []*testSpeaker{a, b, c} {
		select {
		case <-s.InitialSyncDone():
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: initial sync not done with every peer established", s.addr)
		}
	}

	a.advertise(t,
		Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: a.addr},
		Advertisement{Prefix: pfx("10.96.0.10/32"), NextHop: a.addr})
	c.advertise(t,
		Advertisement{Prefix: pfx("10.244.3.0/26"), NextHop: c.addr},
		Advertisement{Prefix: pfx("10.96.0.10/32"), NextHop: c.addr})
	b.advertise(t, Advertisement{Prefix: pfx("10.244.2.0/26"), NextHop: b.addr})

	wantB := routes(
		"10.244.1.0/26", addrs(a.addr),
		"10.244.3.0/26", addrs(c.addr),
		"10.96.0.10/32", addrs(a.addr, c.addr), // ECMP: both best paths
	)
	testutil.Eventually(t, 10*time.Second, "B learns A's and C's routes (Subscribe)", func() error {
		return routesEqual(b.subscribed(), wantB)
	})
	learned, err := b.Learned(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := routesEqual(learned, wantB); err != nil {
		t.Fatalf("B Learned: %v", err)
	}
	// A learns B's own route (B does not reflect C's to A: plain iBGP).
	testutil.Eventually(t, 10*time.Second, "A learns B's route, never its own", func() error {
		got, err := a.Learned(context.Background())
		if err != nil {
			return err
		}
		return routesEqual(got, routes("10.244.2.0/26", addrs(b.addr)))
	})

	// C withdraws the shared prefix: B keeps A's path only. A drops one
	// prefix from its set: B withdraws it.
	c.advertise(t, Advertisement{Prefix: pfx("10.244.3.0/26"), NextHop: c.addr})
	a.advertise(t, Advertisement{Prefix: pfx("10.96.0.10/32"), NextHop: a.addr})
	wantB = routes("10.244.3.0/26", addrs(c.addr), "10.96.0.10/32", addrs(a.addr))
	testutil.Eventually(t, 10*time.Second, "B sees the withdrawals (Subscribe)", func() error {
		return routesEqual(b.subscribed(), wantB)
	})
	if learned, err = b.Learned(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := routesEqual(learned, wantB); err != nil {
		t.Fatalf("B Learned after withdrawals: %v", err)
	}

	// The RIB view: B's copy of the shared prefix names A as its source.
	rib, err := b.RIB(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range rib {
		if e.Prefix == pfx("10.96.0.10/32") {
			found = true
			if e.Peer != a.addr || e.NextHop != a.addr || !e.Best || e.Local {
				t.Errorf("RIB entry %v: want from %s via %s, best", e, a.addr, a.addr)
			}
		}
		if e.Prefix == pfx("10.244.2.0/26") && !e.Local {
			t.Errorf("RIB entry %v: want local", e)
		}
	}
	if !found {
		t.Errorf("RIB of B lacks 10.96.0.10/32: %v", rib)
	}
	st, err := b.peerState(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if st.PrefixesReceived != 1 || st.PrefixesAdvertised != 1 || st.Since.IsZero() || !st.GracefulRestart || st.Type != PeerMesh {
		t.Errorf("B's status of A: %+v; want 1 received, 1 advertised, since set, GR negotiated, Mesh", st)
	}
}

// Setting the same advertisements again changes nothing in the RIB (the
// path keeps its age), and a next-hop change replaces the path.
func TestGoBGPSetAdvertisementsTouchesOnlyTheDifference(t *testing.T) {
	n := loopbackNet(2)
	port := freePort(t, n...)
	a := startSpeaker(t, n[0], port, speakerOpts{})
	b := startSpeaker(t, n[1], port, speakerOpts{})
	a.setPeers(t, a.peerTo(b, PeerMesh))
	b.setPeers(t, b.peerTo(a, PeerMesh))

	keep := Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: a.addr}
	a.advertise(t, keep)
	age := func(p string) time.Time {
		rib, err := a.RIB(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range rib {
			if e.Prefix == pfx(p) && e.Local {
				return e.Since
			}
		}
		t.Fatalf("%s not in A's RIB: %v", p, rib)
		return time.Time{}
	}
	before := age("10.244.1.0/26")
	time.Sleep(1100 * time.Millisecond) // ages have a one-second resolution
	a.advertise(t, keep, Advertisement{Prefix: pfx("10.244.9.0/26"), NextHop: a.addr})
	if after := age("10.244.1.0/26"); !after.Equal(before) {
		t.Errorf("unchanged advertisement re-added: age %v, was %v", after, before)
	}

	// Next hop unset: GoBGP uses the session's address (next hop self).
	a.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26")})
	b.waitEstablished(t, a.addr, 20*time.Second)
	testutil.Eventually(t, 10*time.Second, "B learns the prefix via A's session address", func() error {
		return routesEqual(b.subscribed(), routes("10.244.1.0/26", addrs(a.addr)))
	})
	// Bad input is reported, the valid rest applied.
	err := a.SetAdvertisements(context.Background(), []Advertisement{
		{Prefix: pfx("10.244.1.0/26"), NextHop: a.addr},
		{Prefix: pfx("10.244.5.1/26"), NextHop: a.addr},    // host bits
		{Prefix: pfx("fd00::/64"), NextHop: ip("fd00::1")}, // family not run
	})
	if err == nil {
		t.Fatal("SetAdvertisements accepted a prefix with host bits and an unconfigured family")
	}
	t.Logf("expected error: %v", err)
}

// A peer nobody answers stays Active (or Connect/Idle between attempts)
// and is reported so; the other session is unaffected.
func TestGoBGPUnreachablePeerDoesNotDisturbOthers(t *testing.T) {
	n := loopbackNet(3)
	port := freePort(t, n...)
	a := startSpeaker(t, n[0], port, speakerOpts{})
	b := startSpeaker(t, n[1], port, speakerOpts{})
	ghost := Peer{Address: n[2], ASN: 65009, Type: PeerExternal, Port: port, LocalAddress: a.addr, Description: "nobody"}
	a.setPeers(t, a.peerTo(b, PeerMesh), ghost)
	b.setPeers(t, b.peerTo(a, PeerMesh))
	a.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: a.addr})
	a.waitEstablished(t, b.addr, 20*time.Second)
	testutil.Eventually(t, 10*time.Second, "B learns A's route", func() error {
		return routesEqual(b.subscribed(), routes("10.244.1.0/26", addrs(a.addr)))
	})
	time.Sleep(2 * time.Second) // a few connection attempts
	st, err := a.peerState(ghost.Address)
	if err != nil {
		t.Fatal(err)
	}
	switch st.State {
	case StateActive, StateConnect, StateIdle:
	default:
		t.Errorf("unreachable peer in state %s", st.State)
	}
	if st.Description != "nobody" || st.Type != PeerExternal || st.ASN != 65009 {
		t.Errorf("status %+v does not describe the configured peer", st)
	}
	if st, _ := a.peerState(b.addr); st.State != StateEstablished {
		t.Errorf("the reachable peer is %s", st.State)
	}
	// InitialSyncDone waits for the unreachable peer (until the deadline).
	select {
	case <-a.InitialSyncDone():
		t.Error("initial sync done although a configured peer never came up")
	default:
	}
	// Removing the ghost completes the sync.
	a.setPeers(t, a.peerTo(b, PeerMesh))
	select {
	case <-a.InitialSyncDone():
	case <-time.After(10 * time.Second):
		t.Error("initial sync not done after the unreachable peer was removed")
	}
}

// With no peer answering, InitialSyncDone still fires once the restart
// time has passed.
func TestGoBGPInitialSyncDeadline(t *testing.T) {
	n := loopbackNet(2)
	port := freePort(t, n...)
	a := startSpeaker(t, n[0], port, speakerOpts{gr: true, restartTime: 2 * time.Second})
	a.setPeers(t, Peer{Address: n[1], ASN: 64512, Port: port, LocalAddress: a.addr})
	start := time.Now()
	select {
	case <-a.InitialSyncDone():
		if d := time.Since(start); d < time.Second {
			t.Errorf("initial sync done after %s, before the deadline", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("initial sync not done after the restart-time deadline")
	}
}

func TestGoBGPStartValidates(t *testing.T) {
	for _, g := range []Global{
		{ASN: 64512, RouterID: ip("0.0.0.0")},
		{ASN: 64512, RouterID: ip("224.0.0.5")},
		{ASN: 64512, RouterID: ip("fd00::1")},
		{ASN: 0, RouterID: ip("10.0.0.1")},
		{ASN: 64512},
	} {
		s := NewGoBGP(testLogger(t))
		if err := s.Start(context.Background(), g); err == nil {
			s.Close(false)
			t.Errorf("Start(%+v) accepted", g)
		}
	}
	s := NewGoBGP(testLogger(t))
	if err := s.SetPeers(context.Background(), nil); err == nil {
		t.Error("SetPeers before Start accepted")
	}
	if _, err := s.Learned(context.Background()); err == nil {
		t.Error("Learned before Start accepted")
	}
}

// SetPeers leaves an unchanged session alone (a new description or type
// is not a change), and removes a peer that is gone from the set.
func TestGoBGPSetPeersTouchesOnlyTheDifference(t *testing.T) {
	n := loopbackNet(2)
	port := freePort(t, n...)
	a := startSpeaker(t, n[0], port, speakerOpts{})
	b := startSpeaker(t, n[1], port, speakerOpts{})
	toB := a.peerTo(b, PeerMesh)
	a.setPeers(t, toB)
	b.setPeers(t, b.peerTo(a, PeerMesh))
	a.waitEstablished(t, b.addr, 20*time.Second)
	before, _ := a.peerState(b.addr)
	time.Sleep(1100 * time.Millisecond) // uptimes have a one-second resolution

	toB.Description, toB.Type = "now a reflector", PeerReflector
	a.setPeers(t, toB)
	after, err := a.peerState(b.addr)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != StateEstablished || !after.Since.Equal(before.Since) {
		t.Errorf("session reset by a cosmetic change: %+v, was %+v", after, before)
	}
	if after.Description != "now a reflector" || after.Type != PeerReflector {
		t.Errorf("status not updated: %+v", after)
	}

	a.setPeers(t)
	if sts, err := a.PeerStatus(context.Background()); err != nil || len(sts) != 0 {
		t.Errorf("PeerStatus after removing every peer: %v, %v", sts, err)
	}
	testutil.Eventually(t, 10*time.Second, "B sees the session closed", func() error {
		st, err := b.peerState(a.addr)
		if err != nil {
			return err
		}
		if st.State == StateEstablished {
			return fmt.Errorf("still established")
		}
		return nil
	})
}
