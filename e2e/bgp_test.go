package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestMeshAndBirdPeer: every host peers with every other and with a BIRD
// ToR; BIRD learns each host's blocks with the host as next hop; every host
// installs the ToR's route in its kernel; the ToR reaches the workloads
// over the routes it learned.
func TestMeshAndBirdPeer(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 3, Workloads: 1, Peer: lab.PeerBird})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := netip.MustParsePrefix(l.Options().Pool)

	for _, h := range l.Hosts() {
		st, err := l.NodeStatus(ctx, h.Name)
		if err != nil {
			t.Fatal(err)
		}
		mesh, external := 0, 0
		for _, p := range st.GetBgpPeers() {
			switch p.GetType() {
			case apipb.BGPPeerType_BGP_PEER_TYPE_MESH:
				mesh++
			case apipb.BGPPeerType_BGP_PEER_TYPE_EXTERNAL:
				external++
				if p.GetAddress() != lab.TorIP {
					t.Errorf("%s: external peer %s, want %s", h.Name, p.GetAddress(), lab.TorIP)
				}
			}
		}
		if mesh != 2 || external != 1 {
			t.Errorf("%s: %d mesh and %d external peers, want 2 and 1", h.Name, mesh, external)
		}

		testutil.Eventually(t, 15*time.Second, "BIRD learns the block of "+h.Name, func() error {
			out, err := l.Birdc(ctx, "show", "route", "protocol", h.Name)
			if err != nil {
				return err
			}
			if !routeInPoolVia(out, pool, h.IP) {
				return fmt.Errorf("no route in %s via %s:\n%s", pool, h.IP, out)
			}
			return nil
		})
		testutil.Eventually(t, 15*time.Second, h.Name+" installs the ToR's route", func() error {
			out, err := l.Exec(h.Name, "ip", "route", "show", lab.TorStaticRoute)
			if err != nil || !strings.Contains(out, "via "+lab.TorIP) {
				return fmt.Errorf("%q %v", out, err)
			}
			return nil
		})
	}
	for _, w := range l.Workloads() {
		testutil.Eventually(t, 10*time.Second, "the ToR reaches "+w.Name, func() error { return l.Ping("tor", w.IP()) })
	}
}

// routeInPoolVia reports whether birdc output holds a prefix inside pool
// with the next hop via.
func routeInPoolVia(out string, pool netip.Prefix, via string) bool {
	var inPool bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			if p, err := netip.ParsePrefix(f[0]); err == nil {
				inPool = pool.Contains(p.Addr())
			}
		}
		if inPool && strings.Contains(line, "via "+via) {
			return true
		}
	}
	return false
}

// TestRouteReflectors: 4 hosts, 2 of them reflectors and the mesh off: the
// clients peer only with the reflectors, and every workload still reaches
// every other.
func TestRouteReflectors(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 4, Workloads: 1, Reflectors: 2})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, h := range l.Hosts() {
		st, err := l.NodeStatus(ctx, h.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.GetBgpPeers() {
			if p.GetType() == apipb.BGPPeerType_BGP_PEER_TYPE_MESH {
				t.Errorf("%s has a mesh peer %s with the mesh off", h.Name, p.GetAddress())
			}
			if !h.Reflector && p.GetType() != apipb.BGPPeerType_BGP_PEER_TYPE_REFLECTOR {
				t.Errorf("client %s peers with %s (%s), want only reflectors", h.Name, p.GetAddress(), p.GetType())
			}
		}
	}
	eps := l.Endpoints(false)
	testutil.Eventually(t, 20*time.Second, "ping matrix through reflectors", func() error {
		m := l.PingMatrix(ctx, eps, eps, 8)
		if len(m.Failed()) > 0 {
			return fmt.Errorf("\n%s", m)
		}
		return nil
	})
}
