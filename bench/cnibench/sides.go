package cnibench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/routes/netns"
)

// refPluginDir is where Debian's containernetworking-plugins puts ptp and
// host-local.
const refPluginDir = "/usr/lib/cni"

// refSubnet is the reference side's host-local range; it never overlaps
// the lab's pool or fabric.
const refSubnet = "10.99.0.0/16"

// side is one CNI network under test, called from the same host namespace
// the same way as the other.
type side struct {
	name      string // as shown in the figures
	short     string // in namespace names
	cni       *libcni.CNIConfig
	list      *libcni.NetworkConfigList
	hostNetns string
	// nsPrefix starts every workload namespace name: the lab's prefix, so
	// that a lab Down after a crash sweeps them too.
	nsPrefix string
	seq      int
}

// workload is one pre-created namespace and what libcni is told about it.
type workload struct {
	netns string
	rt    *libcni.RuntimeConf
	// attached is set before ADD starts and cleared after DEL succeeds:
	// whatever is still set at the end gets an untimed DEL.
	attached bool
}

// calyxSide drives the lab's calyx plugin with the conflist the lab itself
// uses for host (the plugin talking to that host's agent).
func calyxSide(l *lab.Lab, h lab.Host, cacheDir string) (*side, error) {
	list, err := libcni.ConfListFromBytes(lab.Conflist(h))
	if err != nil {
		return nil, fmt.Errorf("calyx conflist: %w", err)
	}
	return &side{
		name: "calyx", short: "cx", list: list, hostNetns: h.Netns, nsPrefix: l.Prefix(),
		cni: libcni.NewCNIConfigWithCacheDir([]string{l.Options().BinDir}, cacheDir, nil),
	}, nil
}

// refConflist is the reference network: ptp with host-local IPAM whose
// state lives in dataDir (never in /var/lib/cni).
func refConflist(dataDir string) []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "cnibench-ptp",
		"plugins": []any{map[string]any{
			"type":   "ptp",
			"mtu":    1500,
			"ipMasq": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": refSubnet}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": dataDir,
			},
		}},
	}
	b, _ := json.Marshal(conf)
	return b
}

// refSide drives ptp + host-local from the same host namespace.
func refSide(l *lab.Lab, h lab.Host, cacheDir, dataDir string) (*side, error) {
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(refPluginDir, p)); err != nil {
			return nil, fmt.Errorf("reference plugin %s: %w (Debian package containernetworking-plugins)", p, err)
		}
	}
	list, err := libcni.ConfListFromBytes(refConflist(dataDir))
	if err != nil {
		return nil, fmt.Errorf("ptp conflist: %w", err)
	}
	return &side{
		name: "ptp+host-local", short: "ptp", list: list, hostNetns: h.Netns, nsPrefix: l.Prefix(),
		cni: libcni.NewCNIConfigWithCacheDir([]string{refPluginDir}, cacheDir, nil),
	}, nil
}

// newWorkloads creates n workload namespaces (untimed) and their runtime
// configurations, the same for both sides.
func (s *side) newWorkloads(ctx context.Context, n int) ([]*workload, error) {
	ws := make([]*workload, n)
	names := make([]string, n)
	for i := range ws {
		s.seq++
		name := s.nsPrefix + "b-" + s.short + "-" + strconv.Itoa(s.seq)
		sum := sha256.Sum256([]byte(name))
		names[i] = name
		ws[i] = &workload{netns: name, rt: &libcni.RuntimeConf{
			ContainerID: hex.EncodeToString(sum[:]),
			NetNS:       benchkit.NetnsPath(name),
			IfName:      "eth0",
			Args: [][2]string{
				{"IgnoreUnknown", "1"},
				{"K8S_POD_NAMESPACE", "cnibench"},
				{"K8S_POD_NAME", name},
			},
			CapabilityArgs: map[string]any{"labels": map[string]any{"app": "cnibench"}},
		}}
	}
	if err := benchkit.AddNetns(ctx, names); err != nil {
		_ = benchkit.DelNetns(names)
		return nil, err
	}
	return ws, nil
}

// add is one timed CNI ADD; the caller runs it inside the host namespace.
func (s *side) add(ctx context.Context, w *workload) (time.Duration, error) {
	w.attached = true
	start := time.Now()
	res, err := s.cni.AddNetworkList(ctx, s.list, w.rt)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("%s: CNI ADD into %s: %w", s.name, w.netns, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return took, fmt.Errorf("%s: CNI ADD into %s: reading the result: %w", s.name, w.netns, err)
	}
	if len(r.IPs) == 0 {
		return took, fmt.Errorf("%s: CNI ADD into %s returned no address", s.name, w.netns)
	}
	return took, nil
}

// del is one timed CNI DEL; the caller runs it inside the host namespace.
func (s *side) del(ctx context.Context, w *workload) (time.Duration, error) {
	start := time.Now()
	err := s.cni.DelNetworkList(ctx, s.list, w.rt)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("%s: CNI DEL of %s: %w", s.name, w.netns, err)
	}
	w.attached = false
	return took, nil
}

// release undoes a round whatever happened in it: an untimed DEL of every
// workload still attached (on a fresh context, so that it also runs after
// Ctrl-C), then the namespaces.
func (s *side) release(ws []*workload) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	var names []string
	for _, w := range ws {
		names = append(names, w.netns)
	}
	if err := netns.Do(benchkit.NetnsPath(s.hostNetns), func() error {
		for _, w := range ws {
			if w.attached {
				if _, err := s.del(ctx, w); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	if err := benchkit.DelNetns(names); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
