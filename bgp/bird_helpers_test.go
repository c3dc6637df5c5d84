package bgp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// birdPeer is a BIRD 2 daemon run as a child of the test (not daemonized:
// a daemonized BIRD lingers as a zombie), with its control socket in a
// temporary directory. It plays the ToR.
type birdPeer struct {
	t    testing.TB
	dir  string
	conf string
	sock string
	cmd  *exec.Cmd
	out  *bytes.Buffer
}

func requireBIRD(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (Debian package bird2): %v", bin, err)
		}
	}
}

func startBIRD(t testing.TB, conf string) *birdPeer {
	t.Helper()
	requireBIRD(t)
	dir := t.TempDir()
	b := &birdPeer{t: t, dir: dir, conf: filepath.Join(dir, "bird.conf"), sock: filepath.Join(dir, "bird.ctl"), out: &bytes.Buffer{}}
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command("bird", "-f", "-c", b.conf, "-s", b.sock)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start bird: %v", err)
	}
	exited := make(chan struct{})
	go func() { b.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("bird output:\n%s", b.out.String())
		}
	})
	testutil.Eventually(t, 10*time.Second, "bird control socket answers", func() error {
		select {
		case <-exited:
			t.Fatalf("bird exited: %s\n%s", b.cmd.ProcessState, b.out.String())
		default:
		}
		_, err := b.birdc("show", "status")
		return err
	})
	return b
}

func (b *birdPeer) birdc(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (b *birdPeer) mustBirdc(args ...string) string {
	b.t.Helper()
	out, err := b.birdc(args...)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// reconfigure replaces the configuration and applies it (birdc configure).
func (b *birdPeer) reconfigure(conf string) {
	b.t.Helper()
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		b.t.Fatal(err)
	}
	if out := b.mustBirdc("configure"); !strings.Contains(out, "Reconfigured") {
		b.t.Fatalf("birdc configure: %s", out)
	}
}

// routes is prefix → BGP.next_hop of the routes a BGP protocol imported.
func (b *birdPeer) routes(protocol string) (map[netip.Prefix]netip.Addr, error) {
	out, err := b.birdc("show", "route", "all", "protocol", protocol)
	if err != nil {
		return nil, err
	}
	got := map[netip.Prefix]netip.Addr{}
	var cur netip.Prefix
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			if p, err := netip.ParsePrefix(f[0]); err == nil {
				cur = p
			}
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "BGP.next_hop:"); ok && cur.IsValid() {
			// IPv6 may list a link-local second address; the first counts.
			if a, err := netip.ParseAddr(strings.Fields(v)[0]); err == nil {
				got[cur] = a
			}
		}
	}
	return got, nil
}

// neighborCap is the value of a line of BIRD's "Neighbor capabilities"
// block ("AF supported" → "ipv4 ipv6"), empty when absent.
func (b *birdPeer) neighborCap(protocol, key string) string {
	out := b.mustBirdc("show", "protocols", "all", protocol)
	_, caps, ok := strings.Cut(out, "Neighbor capabilities")
	if !ok {
		return ""
	}
	for _, line := range strings.Split(caps, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// bgpState is the "BGP state" of a BIRD protocol (Established, Active,
// Connect, OpenSent, ...).
func (b *birdPeer) bgpState(name string) string {
	out, err := b.birdc("show", "protocols", "all", name)
	if err != nil {
		return "error: " + err.Error()
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "BGP state:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func (b *birdPeer) waitRoutes(protocol string, want map[netip.Prefix]netip.Addr, timeout time.Duration, what string) {
	b.t.Helper()
	testutil.Eventually(b.t, timeout, what, func() error {
		got, err := b.routes(protocol)
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("bird has %v, want %v", got, want)
		}
		return nil
	})
}

// birdSession is one BGP protocol of a test BIRD.
type birdSession struct {
	name            string
	local           netip.Addr
	localPort       int
	localAS         uint32
	neighbor        netip.Addr
	neighborPort    int
	neighborAS      uint32
	password        string
	gracefulRestart bool
	ipv4, ipv6      bool
	ipv6NextHop     netip.Addr // for IPv6 routes sent over an IPv4 session
}

// birdConfig renders a BIRD configuration: static routes (blackholes) in
// protocols named static4/static6, plus the sessions. Sessions are
// "multihop": BIRD does not treat loopback as a directly connected network,
// which it requires of eBGP neighbors otherwise. Timers are short so that a
// test does not wait for BIRD's default 60 s error back-off.
func birdConfig(routerID netip.Addr, static4, static6 []string, sessions ...birdSession) string {
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nprotocol device {}\n", routerID)
	if len(static4) > 0 {
		b.WriteString("protocol static static4 { ipv4;\n")
		for _, r := range static4 {
			fmt.Fprintf(&b, "  route %s blackhole;\n", r)
		}
		b.WriteString("}\n")
	}
	if len(static6) > 0 {
		b.WriteString("protocol static static6 { ipv6;\n")
		for _, r := range static6 {
			fmt.Fprintf(&b, "  route %s blackhole;\n", r)
		}
		b.WriteString("}\n")
	}
	for _, s := range sessions {
		fmt.Fprintf(&b, "protocol bgp %s {\n", s.name)
		fmt.Fprintf(&b, "  local %s port %d as %d;\n  neighbor %s port %d as %d;\n  multihop;\n",
			s.local, s.localPort, s.localAS, s.neighbor, s.neighborPort, s.neighborAS)
		// strict bind: listen on the local address only, not on a
		// wildcard one (freePort's reservation forbids those).
		b.WriteString("  strict bind yes;\n  connect delay time 1; connect retry time 2; error wait time 1,2;\n")
		if s.password != "" {
			fmt.Fprintf(&b, "  password %q;\n", s.password)
		}
		if s.gracefulRestart {
			b.WriteString("  graceful restart on;\n")
		}
		if s.ipv4 || !s.ipv6 {
			b.WriteString("  ipv4 { import all; export all; };\n")
		}
		if s.ipv6 {
			b.WriteString("  ipv6 { import all; export all;")
			if s.ipv6NextHop.IsValid() {
				fmt.Fprintf(&b, " next hop address %s;", s.ipv6NextHop)
			}
			b.WriteString(" };\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}
