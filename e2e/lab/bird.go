package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const procBird = "bird"

// birdConfig renders the ToR's configuration: an eBGP session to every host
// (AS TorAS to NodeAS), short retry timers so that a session comes up within
// a second or two of the agent listening, the learned routes programmed into
// the ToR namespace's kernel (so the ToR can reach workloads), and one
// static route announced to the hosts.
//
// With ipv6 (a dual-stack lab) the ToR runs a second, separate IPv6 session
// with every host (protocol "hostN_v6", fd18::fd to fd18::N) with an ipv6
// channel only, programs the IPv6 routes it learns and announces
// TorStaticRoute6. Separate sessions rather than an ipv6 channel on the
// IPv4 session: GoBGP rewrites the next hop of the routes it passes on to
// an eBGP peer to the session's local address, which on an IPv4 session
// would be an IPv4(-mapped) next hop for an IPv6 prefix; on an IPv6
// session every next hop is a real IPv6 address.
func birdConfig(hosts int, ipv6 bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by calyx-lab: the lab's top-of-rack router.
router id %[1]s;
log stderr all;

protocol device { scan time 10; }

protocol kernel {
	ipv4 { import none; export where source = RTS_BGP; };
	merge paths on;
}

protocol static {
	ipv4;
	route %[2]s blackhole;
}

template bgp calyxhost {
	local %[1]s as %[3]d;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 10;
	graceful restart on;
	ipv4 { import all; export all; };
}
`, TorIP, TorStaticRoute, TorAS)
	if ipv6 {
		fmt.Fprintf(&b, `
protocol kernel {
	ipv6 { import none; export where source = RTS_BGP; };
	merge paths on;
}

protocol static {
	ipv6;
	route %[1]s blackhole;
}

template bgp calyxhost6 {
	local %[2]s as %[3]d;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 10;
	graceful restart on;
	ipv6 { import all; export all; };
}
`, TorStaticRoute6, TorIPv6, TorAS)
	}
	for i := 1; i <= hosts; i++ {
		fmt.Fprintf(&b, "\nprotocol bgp %s from calyxhost { neighbor %s as %d; }\n", HostName(i), HostIP(i), NodeAS)
		if ipv6 {
			fmt.Fprintf(&b, "protocol bgp %s from calyxhost6 { neighbor %s as %d; }\n", birdProtocol6(HostName(i)), HostIPv6(i), NodeAS)
		}
	}
	return b.String()
}

// birdProtocol6 names the ToR's IPv6 session with host ("host1_v6").
func birdProtocol6(host string) string { return host + "_v6" }

func birdSocket(dir string) string { return filepath.Join(torDir(dir), "bird.ctl") }

// startBird runs BIRD in the foreground (bird -f), detached like every lab
// process: BIRD's own daemon mode leaves a zombie on this kind of machine.
func (l *Lab) startBird(ctx context.Context) error {
	ns := l.names.tor()
	if err := l.plug(ctx, ns, "tor", TorIP, map[bool]string{true: TorIPv6}[l.opts.IPv6]); err != nil {
		return err
	}
	if err := os.MkdirAll(torDir(l.dir), 0o755); err != nil {
		return fmt.Errorf("tor directory: %w", err)
	}
	cfg := filepath.Join(torDir(l.dir), "bird.conf")
	if err := os.WriteFile(cfg, []byte(birdConfig(l.opts.Hosts, l.opts.IPv6)), 0o644); err != nil {
		return fmt.Errorf("writing BIRD config: %w", err)
	}
	bin, err := lookTool("bird")
	if err != nil {
		return err
	}
	sock := birdSocket(l.dir)
	argv := []string{bin, "-f", "-c", cfg, "-s", sock}
	if err := l.startProc(procBird, ns, argv, filepath.Join(logDir(l.dir), "bird.log"), nil); err != nil {
		return err
	}
	// Ready when birdc answers on the control socket. (Right after start
	// BIRD may say "Graceful restart recovery in progress" rather than
	// "Daemon is up": it already serves sessions then.)
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, l.opts.StepTimeout)
	defer cancel()
	for {
		p, _ := l.st.proc(procBird)
		if p != nil && !p.alive() {
			return errProcDied(*p)
		}
		out, err := l.Birdc(ctx, "show", "status")
		if err == nil && strings.Contains(out, "BIRD") {
			return nil
		}
		select {
		case <-ctx.Done():
			return waitFailed(parent, "BIRD on "+sock, l.opts.StepTimeout, err, "log: "+filepath.Join(logDir(l.dir), "bird.log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Birdc runs a birdc command against the ToR (a unix socket, so it works
// from the root namespace).
func (l *Lab) Birdc(ctx context.Context, args ...string) (string, error) {
	if l.opts.Peer != PeerBird {
		return "", fmt.Errorf("this lab has no BIRD peer (up --peer bird)")
	}
	return run(ctx, "birdc", append([]string{"-s", birdSocket(l.dir)}, args...)...)
}

// BirdEstablished lists the ToR's BGP protocols that are Established, by
// protocol name: the host name for the IPv4 session, and "hostN_v6" for the
// IPv6 session of a dual-stack lab.
func (l *Lab) BirdEstablished(ctx context.Context) (map[string]bool, error) {
	out, err := l.Birdc(ctx, "show", "protocols")
	if err != nil {
		return nil, err
	}
	return parseBirdProtocols(out), nil
}

// parseBirdProtocols reads `birdc show protocols`: name proto table state
// since info; the BGP ones whose info is "Established".
func parseBirdProtocols(out string) map[string]bool {
	up := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == "BGP" {
			up[f[0]] = strings.Contains(line, "Established")
		}
	}
	return up
}
