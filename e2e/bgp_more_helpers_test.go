package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/e2e/lab"
)

// Helpers of the BGP suites beyond bgp_test.go: BIRD route parsing, agent
// peer status, IPAM block look-ups and calyxctl runs.

// birdVia lists the next hops BIRD shows for exactly p in the output of
// `birdc show route ...`. A route is a line starting with its prefix, the
// next hop ("via A on eth0") on a following indented line; alternative
// routes of the same prefix are indented lines too.
func birdVia(out string, p netip.Prefix) []string {
	var hops []string
	var cur netip.Prefix
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if q, err := netip.ParsePrefix(f[0]); err == nil {
			cur = q
		} else if line[0] != ' ' && line[0] != '\t' {
			cur = netip.Prefix{} // a header ("Table master4:")
		}
		if cur != p {
			continue
		}
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "via" {
				hops = append(hops, f[i+1])
			}
		}
	}
	return hops
}

// torRouteVia checks that the lab's BIRD has p with next hop via (via ""
// means: has no route to p at all).
func torRouteVia(ctx context.Context, l *lab.Lab, p netip.Prefix, via string) error {
	out, err := l.Birdc(ctx, "show", "route", p.String())
	if err != nil && !strings.Contains(out, "not found") {
		return err
	}
	hops := birdVia(out, p)
	switch {
	case via == "" && len(hops) > 0:
		return fmt.Errorf("BIRD still has %s via %v", p, hops)
	case via != "" && !slices.Contains(hops, via):
		return fmt.Errorf("BIRD has %s via %v, want via %s:\n%s", p, hops, via, out)
	}
	return nil
}

// peerOf finds the agent's session to addr in host's node status.
func peerOf(ctx context.Context, l *lab.Lab, host, addr string) (*apipb.BGPPeerStatus, error) {
	st, err := l.NodeStatus(ctx, host)
	if err != nil {
		return nil, err
	}
	for _, p := range st.GetBgpPeers() {
		if p.GetAddress() == addr {
			return p, nil
		}
	}
	return nil, nil
}

// sessionsSince maps "host>peer" to the start of every Established session
// of the lab's agents, to tell later whether any of them was reset.
func sessionsSince(ctx context.Context, l *lab.Lab) (map[string]int64, error) {
	out := map[string]int64{}
	for _, h := range l.Hosts() {
		st, err := l.NodeStatus(ctx, h.Name)
		if err != nil {
			return nil, err
		}
		for _, p := range st.GetBgpPeers() {
			if p.GetState() == apipb.BGPSessionState_BGP_SESSION_STATE_ESTABLISHED {
				out[h.Name+">"+p.GetAddress()] = p.GetSince()
			}
		}
	}
	return out, nil
}

// blocks reads the IPAM's blocks from the lab's etcd.
func blocks(ctx context.Context, t *testing.T, l *lab.Lab) []ipam.BlockUsage {
	t.Helper()
	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	u, err := ipam.New(ds, slog.New(slog.DiscardHandler)).Show(ctx)
	if err != nil {
		t.Fatalf("ipam show: %v", err)
	}
	return u.Blocks
}

// blockOf finds the block holding ip.
func blockOf(ctx context.Context, t *testing.T, l *lab.Lab, ip string) ipam.BlockUsage {
	t.Helper()
	a := netip.MustParseAddr(ip)
	for _, b := range blocks(ctx, t, l) {
		if b.CIDR.Contains(a) {
			return b
		}
	}
	t.Fatalf("no IPAM block holds %s", ip)
	return ipam.BlockUsage{}
}

// calyxctl runs calyxctl inside host's namespace (the lab points it at
// that host's agent and the lab's etcd) and returns stdout, stderr and the
// exit code.
func calyxctl(ctx context.Context, t *testing.T, l *lab.Lab, host string, args ...string) (string, string, int) {
	t.Helper()
	cmd, err := l.Command(ctx, host, append([]string{lab.CalyxctlBinary}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	default:
		t.Fatalf("running calyxctl %s: %v", strings.Join(args, " "), err)
		return "", "", -1
	}
}

// writeTemp writes a file of the test's and returns its path.
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
