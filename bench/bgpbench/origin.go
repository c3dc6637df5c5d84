package bgpbench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/routes"
)

// Origin is a BIRD on a lab's fabric that originates /32s to host1's agent
// over eBGP, for benchmarks that need an agent holding many learned routes
// (bench/footbench). It is the scale benchmark's originator without the
// receiving BIRD.
type Origin struct {
	ns   extraNamespace
	bird *birdProc
}

// StartOrigin plugs the originator into l's fabric, peers it with host1
// (a BGPPeer for host1 only), announces n /32s of 100.64.0.0/10 and waits
// until host1's kernel holds all of them as BGP routes. The caller closes
// the Origin even when this fails.
func StartOrigin(ctx context.Context, l *lab.Lab, n int, log *slog.Logger) (*Origin, error) {
	o := &Origin{}
	dir := filepath.Join(l.Dir(), "logs", "origin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return o, fmt.Errorf("origin BIRD directory: %w", err)
	}
	var err error
	if o.ns, err = plugExtra(ctx, l, "origin", originIP); err != nil {
		return o, err
	}
	if o.bird, err = startBird(ctx, "origin", o.ns.Name, dir, originConfig(n, lab.HostIP(1), lab.NodeAS)); err != nil {
		return o, err
	}
	if err := l.Apply(ctx, []byte(fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: bench-origin}
spec: {peerIP: %s, asNumber: %d, node: %s}
`, originIP, originAS, scaleHost))); err != nil {
		return o, fmt.Errorf("writing the origin's BGPPeer: %w", err)
	}
	if err := o.bird.waitEstablished(ctx, 60*time.Second, "to_"+sideCalyx); err != nil {
		return o, err
	}
	if err := o.bird.command(ctx, "enable", staticProtocol(sideCalyx)); err != nil {
		return o, err
	}
	hostNS, err := l.Namespace(scaleHost)
	if err != nil {
		return o, err
	}
	deadline := time.Now().Add(max(60*time.Second, time.Duration(n)*time.Millisecond))
	for {
		err := verifyKernel(benchkit.NetnsPath(hostNS), routes.ProtoBGP, n)
		if err == nil {
			log.Info("origin BIRD: every prefix in host1's kernel", "prefixes", n)
			return o, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return o, fmt.Errorf("waiting for %d learned routes on %s: %w; %s", n, scaleHost, err, receivedBy(ctx, l, scaleHost, originIP))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Close stops the BIRD and removes its namespace.
func (o *Origin) Close() error {
	o.bird.stop()
	if o.ns.Name == "" {
		return nil
	}
	return o.ns.remove()
}

// RSSMiB is a process's resident set size (VmRSS), for other suites.
func RSSMiB(pid int) (float64, error) { return rssMiB(pid) }

// CPUSeconds is the user plus system CPU a process has used so far.
func CPUSeconds(pid int) (float64, error) { return cpuSeconds(pid) }
