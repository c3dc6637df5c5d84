package netbench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/routes/netns"
)

// probeInterval is how often the first-ping probe sends: the resolution
// of the figure.
const probeInterval = time.Millisecond

// The CNI ADD of the first-ping figure runs from host2's namespace
// (routes/netns.Do), as a runtime on host2 would (see bench/cnibench).

// firstPinger adds workloads on one host through libcni itself (the lab's
// AddWorkload also saves its state file before it returns, which would
// blur the moment ADD returned) and pings them from a workload elsewhere.
type firstPinger struct {
	l       *lab.Lab
	host    lab.Host
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	probe   *pinger // in the pinging workload
	fabric  *pinger // in the pinging workload's host, for the peer RTT
	fabricD netip.Addr
	seq     int
	idBase  uint16
}

// trial is one new workload's outcome.
type trial struct {
	firstPing time.Duration
	probes    int
	fabricRTT time.Duration
	addr      netip.Addr // the new workload's
}

func newFirstPinger(l *lab.Lab, host lab.Host, cacheDir string, probe, fabric *pinger, fabricDst netip.Addr) (*firstPinger, error) {
	list, err := libcni.ConfListFromBytes(lab.Conflist(host))
	if err != nil {
		return nil, fmt.Errorf("calyx conflist: %w", err)
	}
	return &firstPinger{
		l: l, host: host, list: list, probe: probe, fabric: fabric, fabricD: fabricDst,
		cni:    libcni.NewCNIConfigWithCacheDir([]string{l.Options().BinDir}, cacheDir, nil),
		idBase: uint16(time.Now().UnixNano()),
	}, nil
}

// run makes one workload (namespace untimed), times from its CNI ADD
// returning to the first echo reply, removes it, and takes one fabric RTT
// sample beside it.
func (f *firstPinger) run(ctx context.Context) (tr trial, err error) {
	f.seq++
	// The lab's prefix: a lab Down after a crash sweeps this namespace too.
	name := f.l.Prefix() + "b-fp-" + strconv.Itoa(f.seq)
	sum := sha256.Sum256([]byte(name))
	rt := &libcni.RuntimeConf{
		ContainerID:    hex.EncodeToString(sum[:]),
		NetNS:          benchkit.NetnsPath(name),
		IfName:         "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "netbench"}, {"K8S_POD_NAME", name}},
		CapabilityArgs: map[string]any{"labels": benchLabels},
	}
	if err := benchkit.AddNetns(ctx, []string{name}); err != nil {
		return tr, err
	}
	defer func() { err = errors.Join(err, f.remove(name, rt)) }()

	var res *current.Result
	var returned time.Time
	if err := netns.Do(benchkit.NetnsPath(f.host.Netns), func() error {
		r, err := f.cni.AddNetworkList(ctx, f.list, rt)
		returned = time.Now()
		if err != nil {
			return fmt.Errorf("CNI ADD on %s: %w", f.host.Name, err)
		}
		res, err = current.NewResultFromResult(r)
		return err
	}); err != nil {
		return tr, err
	}
	if len(res.IPs) == 0 {
		return tr, fmt.Errorf("CNI ADD on %s returned no address", f.host.Name)
	}
	dst, ok := netip.AddrFromSlice(res.IPs[0].Address.IP)
	if !ok {
		return tr, fmt.Errorf("CNI ADD on %s: bad address %v", f.host.Name, res.IPs[0].Address.IP)
	}
	id := f.idBase + uint16(f.seq)
	at, probes, err := f.probe.firstReply(ctx, dst.Unmap(), id, probeInterval, 5*time.Second)
	if err != nil {
		return tr, fmt.Errorf("new workload %s on %s: %w", dst, f.host.Name, err)
	}
	tr.firstPing, tr.probes, tr.addr = at.Sub(returned), probes, dst.Unmap()
	if tr.fabricRTT, err = f.fabric.rtt(ctx, f.fabricD, id); err != nil {
		return tr, fmt.Errorf("fabric RTT: %w", err)
	}
	return tr, nil
}

// remove detaches and deletes the workload on a fresh context, so that it
// also runs after Ctrl-C.
func (f *firstPinger) remove(name string, rt *libcni.RuntimeConf) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := netns.Do(benchkit.NetnsPath(f.host.Netns), func() error { return f.cni.DelNetworkList(ctx, f.list, rt) })
	if err != nil {
		err = fmt.Errorf("CNI DEL of %s: %w", name, err)
	}
	return errors.Join(err, benchkit.DelNetns([]string{name}))
}
