package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// A BIRD ToR (eBGP, graceful restart on) and the speaker exchange routes:
// ours arrive with the next hop we set (or our session address), BIRD's are
// learned through Subscribe and Learned, and withdrawals either way are
// seen on the other side.
func TestBIRDExchange(t *testing.T) {
	n := loopbackNet(2)
	port, birdPort := freePort(t, n[0]), freePort(t, n[1])
	s := startSpeaker(t, n[0], port, speakerOpts{gr: true})
	session := birdSession{name: "calyx", local: n[1], localPort: birdPort, localAS: 65000,
		neighbor: n[0], neighborPort: port, neighborAS: 64512, gracefulRestart: true}
	static := []string{"203.0.113.0/24", "198.51.100.0/24"}
	bird := startBIRD(t, birdConfig(n[1], static, nil, session))

	s.setPeers(t, Peer{Address: n[1], ASN: 65000, Type: PeerExternal, Port: birdPort, LocalAddress: n[0], Description: "tor"})
	s.advertise(t,
		Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: n[0]},
		Advertisement{Prefix: pfx("10.244.2.0/26")}) // next hop self
	s.waitEstablished(t, n[1], 20*time.Second)

	bird.waitRoutes("calyx", map[netip.Prefix]netip.Addr{pfx("10.244.1.0/26"): n[0], pfx("10.244.2.0/26"): n[0]},
		10*time.Second, "BIRD receives our blocks with our next hop")
	want := routes("203.0.113.0/24", addrs(n[1]), "198.51.100.0/24", addrs(n[1]))
	testutil.Eventually(t, 10*time.Second, "BIRD's prefixes delivered through Subscribe", func() error {
		return routesEqual(s.subscribed(), want)
	})
	if got, err := s.Learned(context.Background()); err != nil || routesEqual(got, want) != nil {
		t.Fatalf("Learned = %v, %v; want %v", got, err, want)
	}
	select {
	case <-s.InitialSyncDone():
	case <-time.After(10 * time.Second):
		t.Fatal("initial sync not done although BIRD sent End-of-RIB")
	}
	st, err := s.peerState(n[1])
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateEstablished || st.PrefixesReceived != 2 || st.PrefixesAdvertised != 2 || !st.GracefulRestart ||
		st.Type != PeerExternal || st.Description != "tor" || st.RemoteRouterID != n[1].String() {
		t.Errorf("status %+v; want Established, 2 received, 2 advertised, GR, External, tor", st)
	}

	// BIRD withdraws: first by disabling a static protocol, then by a new
	// configuration without the route.
	bird.mustBirdc("disable", "static4")
	testutil.Eventually(t, 10*time.Second, "withdrawal of both prefixes delivered", func() error {
		return routesEqual(s.subscribed(), routes())
	})
	bird.mustBirdc("enable", "static4")
	testutil.Eventually(t, 10*time.Second, "prefixes back", func() error { return routesEqual(s.subscribed(), want) })
	bird.reconfigure(birdConfig(n[1], static[:1], nil, session))
	want = routes("203.0.113.0/24", addrs(n[1]))
	testutil.Eventually(t, 10*time.Second, "reconfigured BIRD's withdrawal delivered", func() error {
		return routesEqual(s.subscribed(), want)
	})
	if got, err := s.Learned(context.Background()); err != nil || routesEqual(got, want) != nil {
		t.Fatalf("Learned after BIRD's withdrawal = %v, %v; want %v", got, err, want)
	}

	// We withdraw one block.
	s.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: n[0]})
	bird.waitRoutes("calyx", map[netip.Prefix]netip.Addr{pfx("10.244.1.0/26"): n[0]}, 10*time.Second,
		"BIRD sees our withdrawal")
}

// TCP MD5: the session with the matching password comes up; the one with
// another password never does, and does not disturb the first.
func TestBIRDPasswords(t *testing.T) {
	n := loopbackNet(3)
	port := freePort(t, n[0])
	goodPort, badPort := freePort(t, n[1]), freePort(t, n[2])
	good := birdSession{name: "good", local: n[1], localPort: goodPort, localAS: 65000,
		neighbor: n[0], neighborPort: port, neighborAS: 64512, password: "s3cret"}
	bad := birdSession{name: "bad", local: n[2], localPort: badPort, localAS: 65000,
		neighbor: n[0], neighborPort: port, neighborAS: 64512, password: "other"}
	bird := startBIRD(t, birdConfig(n[1], []string{"203.0.113.0/24"}, nil, good, bad))
	s := startSpeaker(t, n[0], port, speakerOpts{})
	s.setPeers(t,
		Peer{Address: n[1], ASN: 65000, Type: PeerExternal, Port: goodPort, LocalAddress: n[0], Password: "s3cret"},
		Peer{Address: n[2], ASN: 65000, Type: PeerExternal, Port: badPort, LocalAddress: n[0], Password: "s3cret"})
	s.waitEstablished(t, n[1], 20*time.Second)
	testutil.Eventually(t, 10*time.Second, "route over the MD5 session", func() error {
		return routesEqual(s.subscribed(), routes("203.0.113.0/24", addrs(n[1])))
	})
	time.Sleep(4 * time.Second) // several connection attempts each way
	if st, _ := s.peerState(n[2]); st.State == StateEstablished {
		t.Errorf("session with a wrong password established")
	}
	if state := bird.bgpState("bad"); state == "Established" {
		t.Errorf("BIRD's session with the wrong password is %s", state)
	}
	if state := bird.bgpState("good"); state != "Established" {
		t.Errorf("BIRD's good session is %s", state)
	}
}

// A graceful Close leaves our routes at the BIRD peer (graceful restart
// on), as a crash would; the restarted speaker announces the restart,
// re-establishes, completes its initial sync, and BIRD then drops only what
// we no longer announce. A normal Close withdraws everything at once.
func TestBIRDGracefulRestart(t *testing.T) {
	n := loopbackNet(2)
	port, birdPort := freePort(t, n[0]), freePort(t, n[1])
	session := birdSession{name: "calyx", local: n[1], localPort: birdPort, localAS: 65000,
		neighbor: n[0], neighborPort: port, neighborAS: 64512, gracefulRestart: true}
	bird := startBIRD(t, birdConfig(n[1], []string{"203.0.113.0/24"}, nil, session))
	tor := Peer{Address: n[1], ASN: 65000, Type: PeerExternal, Port: birdPort, LocalAddress: n[0]}
	opts := speakerOpts{gr: true, restartTime: 60 * time.Second}

	s := startSpeaker(t, n[0], port, opts)
	s.setPeers(t, tor)
	s.advertise(t,
		Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: n[0]},
		Advertisement{Prefix: pfx("10.244.9.0/26"), NextHop: n[0]})
	both := map[netip.Prefix]netip.Addr{pfx("10.244.1.0/26"): n[0], pfx("10.244.9.0/26"): n[0]}
	bird.waitRoutes("calyx", both, 20*time.Second, "BIRD has our routes")

	if err := s.Close(true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "BIRD notices the session is gone", func() error {
		if st := bird.bgpState("calyx"); st == "Established" {
			return fmt.Errorf("BGP state %s", st)
		}
		return nil
	})
	time.Sleep(time.Second)
	got, err := bird.routes("calyx")
	if err != nil || fmt.Sprint(got) != fmt.Sprint(both) {
		t.Fatalf("BIRD dropped our routes after a graceful close: %v, %v", got, err)
	}

	s2 := startSpeaker(t, n[0], port, opts)
	s2.setPeers(t, tor)
	s2.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: n[0]})
	select {
	case <-s2.InitialSyncDone():
	case <-time.After(30 * time.Second):
		t.Fatal("restarted speaker: initial sync not done")
	}
	// The restarted speaker announced the restart (R bit: "Restart
	// recovery") and preserved forwarding (F bit: "AF preserved"), so BIRD
	// kept our routes through the new session instead of flushing them.
	if caps := bird.mustBirdc("show", "protocols", "all", "calyx"); !strings.Contains(caps, "Restart recovery") ||
		!strings.Contains(caps, "AF preserved: ipv4") {
		t.Errorf("restarted speaker did not announce restart state and preserved forwarding:\n%s", caps)
	}
	if got := bird.neighborCap("calyx", "AF supported"); got != "ipv4" {
		t.Errorf("graceful restart offered for %q, want only the family run (ipv4)", got)
	}
	if err := routesEqual(s2.subscribed(), routes("203.0.113.0/24", addrs(n[1]))); err != nil {
		t.Errorf("restarted speaker at initial sync: %v", err)
	}
	bird.waitRoutes("calyx", map[netip.Prefix]netip.Addr{pfx("10.244.1.0/26"): n[0]}, 10*time.Second,
		"BIRD keeps what we re-announced and drops the rest after our End-of-RIB")

	if err := s2.Close(false); err != nil {
		t.Fatal(err)
	}
	bird.waitRoutes("calyx", map[netip.Prefix]netip.Addr{}, 5*time.Second, "BIRD withdraws at once after a normal close")
}

// IPv6 unicast: over the node's IPv4 session (MP-BGP, with an explicit IPv6
// next hop each way), and over an IPv6 session on ::1.
func TestBIRDIPv6(t *testing.T) {
	t.Run("over-ipv4-session", func(t *testing.T) {
		n := loopbackNet(2)
		port, birdPort := freePort(t, n[0]), freePort(t, n[1])
		session := birdSession{name: "calyx", local: n[1], localPort: birdPort, localAS: 65000,
			neighbor: n[0], neighborPort: port, neighborAS: 64512, ipv4: true, ipv6: true,
			ipv6NextHop: ip("2001:db8::2")}
		bird := startBIRD(t, birdConfig(n[1], []string{"203.0.113.0/24"}, []string{"2001:db8:100::/48"}, session))
		s := startSpeaker(t, n[0], port, speakerOpts{gr: true, families: []Family{IPv4Unicast, IPv6Unicast}})
		s.setPeers(t, Peer{Address: n[1], ASN: 65000, Type: PeerExternal, Port: birdPort, LocalAddress: n[0]})
		s.advertise(t,
			Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: n[0]},
			Advertisement{Prefix: pfx("fd00:10:244:1::/122"), NextHop: ip("2001:db8::1")})
		bird.waitRoutes("calyx", map[netip.Prefix]netip.Addr{
			pfx("10.244.1.0/26"):       n[0],
			pfx("fd00:10:244:1::/122"): ip("2001:db8::1"),
		}, 20*time.Second, "BIRD receives both families")
		testutil.Eventually(t, 10*time.Second, "IPv6 prefix learned with BIRD's IPv6 next hop", func() error {
			return routesEqual(s.subscribed(), routes("203.0.113.0/24", addrs(n[1]), "2001:db8:100::/48", addrs(ip("2001:db8::2"))))
		})
		select {
		case <-s.InitialSyncDone():
		case <-time.After(10 * time.Second):
			t.Fatal("initial sync not done with End-of-RIB for both families")
		}
		if got := bird.neighborCap("calyx", "AF supported"); got != "ipv4 ipv6" {
			t.Errorf("graceful restart offered for %q, want ipv4 ipv6", got)
		}
		s.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: n[0]})
		bird.waitRoutes("calyx", map[netip.Prefix]netip.Addr{pfx("10.244.1.0/26"): n[0]}, 10*time.Second,
			"BIRD sees the IPv6 withdrawal")
	})
	t.Run("ipv6-session", func(t *testing.T) {
		lo := ip("::1")
		port := freePort(t, lo)
		birdPort := freePort(t, lo)
		for birdPort == port {
			birdPort = freePort(t, lo)
		}
		session := birdSession{name: "calyx", local: lo, localPort: birdPort, localAS: 65000,
			neighbor: lo, neighborPort: port, neighborAS: 64512, ipv6: true,
			ipv6NextHop: ip("2001:db8::2")} // BIRD withdraws rather than announce next hop ::1
		bird := startBIRD(t, birdConfig(ip("10.255.255.2"), nil, []string{"2001:db8:200::/48"}, session))
		s := startSpeaker(t, lo, port, speakerOpts{families: []Family{IPv6Unicast}})
		s.setPeers(t, Peer{Address: lo, ASN: 65000, Type: PeerExternal, Port: birdPort, LocalAddress: lo})
		s.advertise(t, Advertisement{Prefix: pfx("fd00:10:244:2::/122"), NextHop: ip("2001:db8::1")})
		bird.waitRoutes("calyx", map[netip.Prefix]netip.Addr{pfx("fd00:10:244:2::/122"): ip("2001:db8::1")},
			20*time.Second, "BIRD receives the IPv6 prefix over the IPv6 session")
		testutil.Eventually(t, 10*time.Second, "IPv6 prefix learned over the IPv6 session", func() error {
			return routesEqual(s.subscribed(), routes("2001:db8:200::/48", addrs(ip("2001:db8::2"))))
		})
	})
}
