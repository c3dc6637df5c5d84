package bgpbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/routes"
)

// scaleHost is the calyx host that peers with the originating BIRD.
const scaleHost = "host1"

// scale is what the scale benchmark measured, one entry per round.
type scale struct {
	prefixes int
	// install: from `birdc enable routes_SIDE` on the originator until the
	// receiver's kernel holds every prefix.
	calyx, bird []time.Duration
	// withdraw: from `birdc disable routes_SIDE` until the receiver's
	// kernel holds none of them.
	calyxWithdraw, birdWithdraw []time.Duration
	// CPU seconds the receiving process (the calyx agent, the BIRD) spent
	// on each install, and on each withdrawal: what a machine with spare
	// cores would turn into time.
	calyxCPU, birdCPU                 []float64
	calyxWithdrawCPU, birdWithdrawCPU []float64
	// meshCPU, meshWithdrawCPU: CPU seconds the other hosts' agents spent
	// meanwhile (host1 does not pass eBGP routes on, so anything here is
	// overhead of the calyx side).
	meshCPU, meshWithdrawCPU []float64
	// RSS with every prefix in the kernel (highest over the rounds), and
	// before the first round.
	agentRSS, birdRSS float64
	// RSS settleWait after that (highest over the rounds): what stays once
	// the burst's garbage is collected and given back.
	agentRSSSettled, birdRSSSettled float64
	agentRSSBase, birdRSSBase       float64
	lostEvents                      int
}

// scaleRig is the originating and the receiving BIRD with their
// namespaces; close removes them all.
type scaleRig struct {
	dir              string
	originNS, recvNS extraNamespace
	origin, recv     *birdProc
	log              *slog.Logger
}

func (r *scaleRig) close() {
	r.origin.stop()
	r.recv.stop()
	for _, ns := range []extraNamespace{r.originNS, r.recvNS} {
		if ns.Name == "" {
			continue
		}
		if err := ns.remove(); err != nil {
			r.log.Warn("scale benchmark cleanup", "err", err)
		}
	}
}

// newScaleRig plugs the two BIRD namespaces into the lab's fabric, starts
// both BIRDs, points host1 at the originator (a BGPPeer for host1 only)
// and waits until both sessions are Established. The caller closes the
// rig even when this fails.
func newScaleRig(ctx context.Context, l *lab.Lab, prefixes int, log *slog.Logger) (*scaleRig, error) {
	// Under logs/, which the lab's Down keeps: a failed run leaves the
	// BIRD configs and logs to look at (Run removes the directory after a
	// success).
	r := &scaleRig{dir: filepath.Join(l.Dir(), "logs", "bgpbench"), log: log}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return r, fmt.Errorf("scale benchmark directory: %w", err)
	}
	var err error
	if r.originNS, err = plugExtra(ctx, l, "origin", originIP); err != nil {
		return r, err
	}
	if r.recvNS, err = plugExtra(ctx, l, "recv", receiveIP); err != nil {
		return r, err
	}
	if r.recv, err = startBird(ctx, "receiver", r.recvNS.Name, r.dir, receiveConfig()); err != nil {
		return r, err
	}
	start := time.Now()
	if r.origin, err = startBird(ctx, "origin", r.originNS.Name, r.dir, originConfig(prefixes, lab.HostIP(1), lab.NodeAS)); err != nil {
		return r, err
	}
	log.Info("originating BIRD up", "prefixes", prefixes, "config_parse_and_start", time.Since(start).Round(time.Millisecond))
	peer := &datastore.BGPPeer{
		TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindBGPPeer},
		Metadata: datastore.Metadata{Name: "bgpbench-origin"},
		Spec:     datastore.BGPPeerSpec{PeerIP: originIP, ASNumber: originAS, Node: scaleHost},
	}
	if err := datastore.Validate(peer); err != nil {
		return r, fmt.Errorf("benchmark BGPPeer: %w", err)
	}
	ds, err := l.Datastore()
	if err != nil {
		return r, err
	}
	if _, err := ds.Apply(ctx, peer); err != nil {
		return r, fmt.Errorf("writing the benchmark BGPPeer: %w", err)
	}
	return r, r.origin.waitEstablished(ctx, 60*time.Second, "to_"+sideCalyx, "to_"+sideBird)
}

// measureScale runs rounds of: for each side (the order alternates from
// round to round), enable that side's static protocol on the originator,
// time until the receiver's kernel holds all prefixes, then disable it and
// time until the kernel holds none.
func measureScale(ctx context.Context, l *lab.Lab, prefixes, rounds int, log *slog.Logger) (res scale, err error) {
	res.prefixes = prefixes
	rig, err := newScaleRig(ctx, l, prefixes, log)
	defer rig.close()
	if err != nil {
		return res, err
	}
	hostNS, err := l.Namespace(scaleHost)
	if err != nil {
		return res, err
	}
	agentPID, err := agentPIDOf(l, scaleHost)
	if err != nil {
		return res, err
	}
	watchers := map[string]*routeWatcher{}
	nsPaths := map[string]string{sideCalyx: benchkit.NetnsPath(hostNS), sideBird: rig.recvNS.path()}
	protos := map[string]int{sideCalyx: routes.ProtoBGP, sideBird: unix.RTPROT_BIRD}
	for _, side := range []string{sideCalyx, sideBird} {
		w, err := watchRoutes(nsPaths[side], protos[side], benchPrefixes, log.With("side", side))
		if err != nil {
			return res, err
		}
		defer w.close()
		watchers[side] = w
	}
	pids := map[string]int{sideCalyx: agentPID, sideBird: rig.recv.pid()}
	var meshPIDs []int
	for _, h := range l.Hosts() {
		if h.Name == scaleHost {
			continue
		}
		pid, err := agentPIDOf(l, h.Name)
		if err != nil {
			return res, err
		}
		meshPIDs = append(meshPIDs, pid)
	}
	if res.agentRSSBase, err = rssMiB(agentPID); err != nil {
		return res, err
	}
	if res.birdRSSBase, err = rssMiB(rig.recv.pid()); err != nil {
		return res, err
	}
	prof, err := newProfiler(l, scaleHost, log)
	if err != nil {
		return res, err
	}
	// A generous bound: LAB-NOTES measured 0.79 s for 100k BIRD to BIRD.
	timeout := max(60*time.Second, time.Duration(prefixes)*time.Millisecond)

	for round := range rounds {
		order := []string{sideCalyx, sideBird}
		if round%2 == 1 {
			order = []string{sideBird, sideCalyx}
		}
		for _, side := range order {
			w := watchers[side]
			cpu0, err := cpuSeconds(pids[side])
			if err != nil {
				return res, err
			}
			mesh0, err := totalCPU(meshPIDs)
			if err != nil {
				return res, err
			}
			profiled := prof != nil && round == 0 && side == sideCalyx
			if profiled {
				prof.startCPU(ctx, "cpu-install.pb.gz")
			}
			install, err := timeTransfer(ctx, rig.origin, w, "enable", side, prefixes, timeout)
			if profiled && err == nil {
				err = errors.Join(prof.waitCPU(), prof.heap(ctx, "heap-installed.pb.gz"))
			}
			if err != nil {
				if side == sideCalyx && ctx.Err() == nil {
					err = fmt.Errorf("%w; %s", err, receivedBy(ctx, l, scaleHost, originIP))
				}
				return res, fmt.Errorf("round %d, %s: %w", round+1, side, err)
			}
			if err := verifyKernel(nsPaths[side], protos[side], prefixes); err != nil {
				return res, fmt.Errorf("round %d, %s: %w", round+1, side, err)
			}
			rss, cpu1, err := usage(pids[side])
			if err != nil {
				return res, err
			}
			time.Sleep(settleWait)
			// The withdrawal's CPU window starts after the wait: whatever
			// the receiver does meanwhile (a collection) is in neither.
			settled, cpuSettled, err := usage(pids[side])
			if err != nil {
				return res, err
			}
			mesh1, err := totalCPU(meshPIDs)
			if err != nil {
				return res, err
			}
			if profiled {
				prof.startCPU(ctx, "cpu-withdraw.pb.gz")
			}
			withdraw, err := timeTransfer(ctx, rig.origin, w, "disable", side, 0, timeout)
			if profiled && err == nil {
				err = errors.Join(prof.waitCPU(), prof.heap(ctx, "heap-withdrawn.pb.gz"))
			}
			if err != nil {
				return res, fmt.Errorf("round %d, %s withdrawal: %w", round+1, side, err)
			}
			cpu2, err := cpuSeconds(pids[side])
			if err != nil {
				return res, err
			}
			mesh2, err := totalCPU(meshPIDs)
			if err != nil {
				return res, err
			}
			log.Info("scale round", "round", round+1, "side", side, "prefixes", prefixes,
				"install", install.Round(time.Millisecond), "install_cpu_s", round3(cpu1-cpu0),
				"withdraw", withdraw.Round(time.Millisecond), "withdraw_cpu_s", round3(cpu2-cpuSettled),
				"rss_mib", round3(rss), "rss_settled_mib", round3(settled), "settle_cpu_s", round3(cpuSettled-cpu1))
			if side == sideCalyx {
				res.calyx, res.calyxWithdraw = append(res.calyx, install), append(res.calyxWithdraw, withdraw)
				res.calyxCPU, res.calyxWithdrawCPU = append(res.calyxCPU, cpu1-cpu0), append(res.calyxWithdrawCPU, cpu2-cpuSettled)
				res.meshCPU, res.meshWithdrawCPU = append(res.meshCPU, mesh1-mesh0), append(res.meshWithdrawCPU, mesh2-mesh1)
				res.agentRSS = max(res.agentRSS, rss)
				res.agentRSSSettled = max(res.agentRSSSettled, settled)
			} else {
				res.bird, res.birdWithdraw = append(res.bird, install), append(res.birdWithdraw, withdraw)
				res.birdCPU, res.birdWithdrawCPU = append(res.birdCPU, cpu1-cpu0), append(res.birdWithdrawCPU, cpu2-cpuSettled)
				res.birdRSS = max(res.birdRSS, rss)
				res.birdRSSSettled = max(res.birdRSSSettled, settled)
			}
		}
	}
	for _, w := range watchers {
		res.lostEvents += w.lostEvents()
	}
	return res, nil
}

// usage reads a process's RSS (MiB) and CPU seconds.
func usage(pid int) (rss, cpu float64, err error) {
	if rss, err = rssMiB(pid); err != nil {
		return 0, 0, err
	}
	cpu, err = cpuSeconds(pid)
	return rss, cpu, err
}

// settleWait is how long after an install the settled RSS is read: past
// the agent's release of a burst's memory (releaseQuiet, 2 s, after the
// last large handover).
const settleWait = 4 * time.Second

// timeTransfer runs `birdc enable|disable routes_SIDE` on the originator
// and times until the receiver's kernel holds want of the prefixes.
func timeTransfer(ctx context.Context, origin *birdProc, w *routeWatcher, verb, side string, want int, timeout time.Duration) (time.Duration, error) {
	if n := w.count(); n != 0 && verb == "enable" {
		return 0, fmt.Errorf("the receiver's kernel holds %d benchmark routes before the transfer", n)
	}
	start := time.Now()
	if err := origin.command(ctx, verb, staticProtocol(side)); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	at, err := w.waitCount(wctx, want)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("after %s %s the kernel held %d of the wanted %d routes when %s had passed: %w",
			verb, staticProtocol(side), w.count(), want, timeout, err)
	}
	return at.Sub(start), nil
}

// verifyKernel counts the benchmark routes with a netlink dump: the event
// count is what the figure uses, the dump proves it right.
func verifyKernel(nsPath string, proto, want int) error {
	ns, err := vns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", nsPath, err)
	}
	defer h.Close()
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: netlink.RouteProtocol(proto), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("listing routes in %s: %w", nsPath, err)
	}
	n := 0
	for _, r := range rs {
		if r.Dst != nil && benchPrefixes.Contains(ipAddr(r.Dst.IP)) {
			n++
		}
	}
	if n != want {
		return fmt.Errorf("a dump of %s finds %d benchmark routes of protocol %d where the event watch counted %d", nsPath, n, proto, want)
	}
	return nil
}

// totalCPU adds up the CPU seconds of processes.
func totalCPU(pids []int) (float64, error) {
	var sum float64
	for _, pid := range pids {
		c, err := cpuSeconds(pid)
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

// receivedBy says how many prefixes host's BGP speaker holds from peer,
// to tell a slow speaker from a slow kernel programming.
func receivedBy(ctx context.Context, l *lab.Lab, host, peer string) string {
	st, err := l.NodeStatus(ctx, host)
	if err != nil {
		return "the agent's status is unavailable: " + err.Error()
	}
	for _, p := range st.GetBgpPeers() {
		if p.GetAddress() == peer {
			return fmt.Sprintf("%s's BGP speaker has received %d prefixes from %s (session %s)", host, p.GetPrefixesReceived(), peer, p.GetState())
		}
	}
	return fmt.Sprintf("%s has no BGP session with %s", host, peer)
}

// agentPIDOf is the PID of host's agent as the lab recorded it.
func agentPIDOf(l *lab.Lab, host string) (int, error) {
	for _, p := range l.Processes() {
		if p.Name == "agent-"+host && p.Alive() {
			return p.PID, nil
		}
	}
	return 0, errors.New("the agent of " + host + " does not run")
}
