package bgpbench

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/routes"
)

// The failover benchmark: a ToR (BIRD, "<prefix>bb-ftor") announces one
// prefix to host2 (BFD 300 ms x 3), to host3 (no BFD: the hold timer is
// all it has) and to a receiving BIRD with BFD and its kernel protocol
// ("<prefix>bb-frecv"). Then the ToR's link is cut at the fabric bridge,
// so every other link stays up, and each receiver is timed until the
// prefix leaves its kernel.
const (
	failoverToRIP  = "198.18.0.239"
	failoverRecvIP = "198.18.0.238"
	failoverToRAS  = 65010
	failoverRecvAS = 65011
	bfdIntervalMs  = 300
	bfdMultiplier  = 3
	bfdHost        = "host2"
	holdHost       = "host3"
)

var failoverRoute = netip.MustParsePrefix("192.0.2.0/24")

type failover struct {
	calyxBFD, birdBFD time.Duration
	// calyxHold is the same without BFD; zero when not measured (quick).
	calyxHold time.Duration
	holdTime  uint64 // negotiated, seconds
}

func failoverToRConfig() string {
	return fmt.Sprintf(`# Written by bgpbench: the ToR whose link the failover benchmark cuts.
router id %[1]s;
log stderr { warning, error, fatal };
protocol device { scan time 10; }
protocol static { ipv4; route %[2]s blackhole; }
protocol bfd { interface "eth0" { interval %[3]d ms; multiplier %[4]d; }; }
template bgp f {
	local %[1]s as %[5]d;
	connect delay time 1; connect retry time 2; error wait time 1, 10;
	ipv4 { import none; export all; };
}
protocol bgp to_calyx from f { neighbor %[6]s as %[7]d; bfd on; }
protocol bgp to_hold from f { neighbor %[8]s as %[7]d; }
protocol bgp to_bird from f { neighbor %[9]s as %[10]d; bfd on; }
`, failoverToRIP, failoverRoute, bfdIntervalMs, bfdMultiplier, failoverToRAS, lab.HostIP(2), lab.NodeAS, lab.HostIP(3), failoverRecvIP, failoverRecvAS)
}

func failoverRecvConfig() string {
	return fmt.Sprintf(`# Written by bgpbench: the BIRD beside the agent in the failover benchmark.
router id %[1]s;
log stderr { warning, error, fatal };
protocol device { scan time 10; }
protocol kernel { ipv4 { import none; export all; }; }
protocol bfd { interface "eth0" { interval %[2]d ms; multiplier %[3]d; }; }
protocol bgp from_tor {
	local %[1]s as %[4]d;
	neighbor %[5]s as %[6]d;
	bfd on;
	connect delay time 1; connect retry time 2; error wait time 1, 10;
	ipv4 { import all; export none; };
}
`, failoverRecvIP, bfdIntervalMs, bfdMultiplier, failoverRecvAS, failoverToRIP, failoverToRAS)
}

// measureFailover sets the rig up, cuts the ToR off and times the three
// receivers. withHold also waits for the hold timer (90 s).
func measureFailover(ctx context.Context, l *lab.Lab, withHold bool, log *slog.Logger) (res failover, err error) {
	dir := filepath.Join(l.Dir(), "logs", "bgpbench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	torNS, err := plugExtra(ctx, l, "ftor", failoverToRIP)
	defer func() { _ = torNS.remove() }()
	if err != nil {
		return res, err
	}
	recvNS, err := plugExtra(ctx, l, "frecv", failoverRecvIP)
	defer func() { _ = recvNS.remove() }()
	if err != nil {
		return res, err
	}
	recv, err := startBird(ctx, "failover-receiver", recvNS.Name, dir, failoverRecvConfig())
	if recv != nil {
		defer recv.stop()
	}
	if err != nil {
		return res, err
	}
	tor, err := startBird(ctx, "failover-tor", torNS.Name, dir, failoverToRConfig())
	if tor != nil {
		defer tor.stop()
	}
	if err != nil {
		return res, err
	}
	ds, err := l.Datastore()
	if err != nil {
		return res, err
	}
	peers := []*datastore.BGPPeer{
		{Metadata: datastore.Metadata{Name: "bgpbench-failover-bfd"}, Spec: datastore.BGPPeerSpec{PeerIP: failoverToRIP, ASNumber: failoverToRAS,
			Node: bfdHost, BFD: &datastore.BFDSpec{Enabled: true, IntervalMs: bfdIntervalMs, Multiplier: bfdMultiplier}}},
		{Metadata: datastore.Metadata{Name: "bgpbench-failover-hold"}, Spec: datastore.BGPPeerSpec{PeerIP: failoverToRIP, ASNumber: failoverToRAS, Node: holdHost}},
	}
	for _, p := range peers {
		p.TypeMeta = datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindBGPPeer}
		if err := datastore.Validate(p); err != nil {
			return res, err
		}
		if _, err := ds.Apply(ctx, p); err != nil {
			return res, fmt.Errorf("writing %s: %w", p.Metadata.Name, err)
		}
		defer func(name string) {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = ds.Delete(dctx, datastore.KindBGPPeer, name)
		}(p.Metadata.Name)
	}
	if err := tor.waitEstablished(ctx, 60*time.Second, "to_calyx", "to_hold", "to_bird"); err != nil {
		return res, err
	}

	// Everyone holds the route, and both BFD sessions are up.
	type receiver struct {
		name string
		w    *routeWatcher
	}
	var rs []receiver
	for _, r := range []struct {
		name, ns string
		proto    int
	}{
		{bfdHost, "", routes.ProtoBGP}, {holdHost, "", routes.ProtoBGP}, {"bird", recvNS.path(), unix.RTPROT_BIRD},
	} {
		path := r.ns
		if path == "" {
			ns, err := l.Namespace(r.name)
			if err != nil {
				return res, err
			}
			path = benchkit.NetnsPath(ns)
		}
		w, err := watchRoutes(path, r.proto, failoverRoute, log.With("receiver", r.name))
		if err != nil {
			return res, err
		}
		defer w.close()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = w.waitCount(wctx, 1)
		cancel()
		if err != nil {
			return res, fmt.Errorf("%s never installed %s: %w", r.name, failoverRoute, err)
		}
		rs = append(rs, receiver{r.name, w})
	}
	if err := waitBFDUp(ctx, l, recv); err != nil {
		return res, err
	}
	// GoBGP offers 90 s, BIRD 240 s: the session runs on the lower.
	res.holdTime = 90

	fabric, err := l.Namespace("fabric")
	if err != nil {
		return res, err
	}
	cut := time.Now()
	if _, err := run(ctx, "ip", "-n", fabric, "link", "set", "bb-ftor", "down"); err != nil {
		return res, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := map[string]error{}
	for _, r := range rs {
		if r.name == holdHost && !withHold {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			limit := 20 * time.Second
			if r.name == holdHost {
				limit = 150 * time.Second
			}
			wctx, cancel := context.WithTimeout(ctx, limit)
			defer cancel()
			at, err := r.w.waitCount(wctx, 0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[r.name] = fmt.Errorf("%s still holds %s %s after the cut: %w", r.name, failoverRoute, limit, err)
				return
			}
			d := at.Sub(cut)
			switch r.name {
			case bfdHost:
				res.calyxBFD = d
			case holdHost:
				res.calyxHold = d
			default:
				res.birdBFD = d
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		return res, err
	}
	log.Info("failover", "calyx_bfd", res.calyxBFD.Round(time.Millisecond), "bird_bfd", res.birdBFD.Round(time.Millisecond),
		"calyx_hold_timer", res.calyxHold.Round(time.Millisecond))
	return res, nil
}

// waitBFDUp waits for BFD on host2's session to the ToR and on the
// receiving BIRD's.
func waitBFDUp(ctx context.Context, l *lab.Lab, recv *birdProc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		calyx, bird := "", ""
		if st, err := l.NodeStatus(ctx, bfdHost); err == nil {
			for _, p := range st.GetBgpPeers() {
				if p.GetAddress() == failoverToRIP {
					calyx = p.GetBfdState()
				}
			}
		}
		if out, err := recv.birdc(ctx, "show", "bfd", "sessions"); err == nil && strings.Contains(out, failoverToRIP) && strings.Contains(out, "Up") {
			bird = "up"
		}
		if calyx == "up" && bird == "up" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("BFD not up within 30 s: %s's %q, the BIRD receiver's %q", bfdHost, calyx, bird)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
