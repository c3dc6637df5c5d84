package netbench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// The VXLAN peer is an overlay between the same two hosts, built the way
// flannel's vxlan backend builds one: per host a workload namespace on a
// veth pair routed by the host, a VXLAN device (VNI vxlanID, UDP 4789 over
// the fabric) holding the host's overlay address, a route to the other
// host's workload subnet via its overlay address, and static neighbour and
// FDB entries for it (no learning, no multicast). The workload MTU is the
// fabric's less the 50 bytes of VXLAN over IPv4, as flannel sets it.
// None of its interfaces is a cx- one: the agent leaves them alone.
const (
	vxlanID     = 4242
	vxlanDev    = "vxbench"
	vxlanHostIf = "vxw" // host end of the overlay workload's veth
	vxlanMTU    = 1450
)

// vxlanSubnet is host i's overlay workload subnet, 10.98.i.0/24: inside
// neither the lab's pool nor its fabric nor cnibench's range.
func vxlanSubnet(i int) string { return "10.98." + strconv.Itoa(i) + ".0/24" }

// vxlanHostAddr is host i's address on the VXLAN device (flannel's x.x.i.0).
func vxlanHostAddr(i int) string { return "10.98." + strconv.Itoa(i) + ".0" }

// vxlanGateway is host i's end of its overlay workload's veth.
func vxlanGateway(i int) string { return "10.98." + strconv.Itoa(i) + ".1" }

// vxlanWorkloadAddr is host i's overlay workload.
func vxlanWorkloadAddr(i int) string { return "10.98." + strconv.Itoa(i) + ".2" }

// vxlanMAC is host i's VXLAN device address, fixed so that the other host's
// neighbour and FDB entries can be written before it exists.
func vxlanMAC(i int) string { return fmt.Sprintf("02:98:00:00:00:%02x", i) }

// vxlanOverlay is the peer built between two lab hosts.
type vxlanOverlay struct {
	l          *lab.Lab
	hosts      [2]lab.Host
	workloads  [2]string // namespace names
	workloadIP [2]string
}

// newVXLANOverlay builds the overlay between h1 and h2; the caller closes it
// even when this fails, which removes whatever was made.
func newVXLANOverlay(ctx context.Context, l *lab.Lab, h1, h2 lab.Host) (*vxlanOverlay, error) {
	o := &vxlanOverlay{l: l, hosts: [2]lab.Host{h1, h2}}
	for k, h := range o.hosts {
		// The lab's prefix: a lab Down after a crash sweeps it too.
		o.workloads[k] = l.Prefix() + "b-vx" + strconv.Itoa(h.Index)
		o.workloadIP[k] = vxlanWorkloadAddr(h.Index)
	}
	if err := benchkit.AddNetns(ctx, o.workloads[:]); err != nil {
		return o, fmt.Errorf("VXLAN peer: %w", err)
	}
	for k, h := range o.hosts {
		other := o.hosts[1-k]
		i, j := h.Index, other.Index
		ns := o.workloads[k]
		host := [][]string{
			{"link", "add", vxlanDev, "address", vxlanMAC(i), "type", "vxlan", "id", strconv.Itoa(vxlanID),
				"local", h.IP, "dstport", "4789", "dev", "eth0", "nolearning"},
			{"link", "set", vxlanDev, "mtu", strconv.Itoa(vxlanMTU), "up"},
			{"addr", "add", vxlanHostAddr(i) + "/32", "dev", vxlanDev},
			{"neigh", "replace", vxlanHostAddr(j), "lladdr", vxlanMAC(j), "dev", vxlanDev, "nud", "permanent"},
			{"route", "add", vxlanSubnet(j), "via", vxlanHostAddr(j), "dev", vxlanDev, "onlink"},
			{"link", "add", vxlanHostIf, "mtu", strconv.Itoa(vxlanMTU), "type", "veth", "peer", "name", "eth0", "mtu", strconv.Itoa(vxlanMTU), "netns", ns},
			{"addr", "add", vxlanGateway(i) + "/24", "dev", vxlanHostIf},
			{"link", "set", vxlanHostIf, "up"},
		}
		for _, args := range host {
			if _, err := l.ExecContext(ctx, h.Name, append([]string{"ip"}, args...)...); err != nil {
				return o, fmt.Errorf("VXLAN peer on %s: %w", h.Name, err)
			}
		}
		if _, err := l.ExecContext(ctx, h.Name, "bridge", "fdb", "append", vxlanMAC(j), "dev", vxlanDev, "dst", other.IP); err != nil {
			return o, fmt.Errorf("VXLAN peer on %s: %w", h.Name, err)
		}
		for _, args := range [][]string{
			{"link", "set", "lo", "up"},
			{"addr", "add", o.workloadIP[k] + "/24", "dev", "eth0"},
			{"link", "set", "eth0", "up"},
			{"route", "add", "default", "via", vxlanGateway(i)},
		} {
			if _, err := l.ExecContext(ctx, h.Name, append([]string{"ip", "-n", ns}, args...)...); err != nil {
				return o, fmt.Errorf("VXLAN peer workload %s: %w", ns, err)
			}
		}
	}
	return o, nil
}

// close removes the overlay's namespaces (their veths go with them) and
// the VXLAN devices, best effort for each.
func (o *vxlanOverlay) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, h := range o.hosts {
		if h.Name == "" {
			continue
		}
		for _, dev := range []string{vxlanHostIf, vxlanDev} {
			if out, err := o.l.ExecContext(ctx, h.Name, "ip", "-o", "link", "show", dev); err != nil || out == "" {
				continue
			}
			if _, err := o.l.ExecContext(ctx, h.Name, "ip", "link", "del", dev); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(append(errs, benchkit.DelNetns(o.workloads[:]))...)
}
