package bgp

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

const frrBgpd = "/usr/lib/frr/bgpd"

// frrPeer is FRR's bgpd alone (no zebra), a child of the test, listening
// on one loopback address and port.
type frrPeer struct {
	dir string
	out *bytes.Buffer
}

func startFRR(t *testing.T, addr netip.Addr, port int, conf string) *frrPeer {
	t.Helper()
	if _, err := os.Stat(frrBgpd); err != nil {
		t.Skipf("FRR not installed (Debian package frr): %v", err)
	}
	u, err := user.Lookup("frr")
	if err != nil {
		t.Skipf("no frr user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// Not t.TempDir: its parent is private to root, and bgpd runs as frr.
	dir, err := os.MkdirTemp("", "calyx-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, uid, gid); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &frrPeer{dir: run, out: &bytes.Buffer{}}
	cmd := exec.Command(frrBgpd, "-f", cfg, "-i", filepath.Join(run, "bgpd.pid"), "-z", filepath.Join(run, "zserv.api"),
		"--vty_socket", run, "-Z", "-A", "127.0.0.1", "-P", "0", "-u", "frr", "-g", "frr",
		"-l", addr.String(), "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = f.out, f.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bgpd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("bgpd output:\n%s", f.out.String())
		}
	})
	testutil.Eventually(t, 10*time.Second, "bgpd answers vtysh", func() error {
		select {
		case <-exited:
			t.Fatalf("bgpd exited: %s", f.out.String())
		default:
		}
		_, err := f.vtysh("show bgp summary")
		return err
	})
	return f
}

func (f *frrPeer) vtysh(command string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "vtysh", "--vty_socket", f.dir, "-c", command).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh -c %q: %w: %s", command, err, out)
	}
	return string(out), nil
}

// GoBGP v4 against FRR: FRR announces an ordinary prefix, one that the
// peer's BGPFilter refuses and a more-specific inside the pool; only the
// first is learned. Our block reaches FRR.
func TestFRRExchangeSafetyAndFilter(t *testing.T) {
	n := loopbackNet(2)
	port, frrPort := freePort(t, n[0]), freePort(t, n[1])
	conf := fmt.Sprintf(`frr defaults traditional
hostname frr-tor
log stdout
router bgp 65000
 bgp router-id %[1]s
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor %[2]s remote-as 64512
 neighbor %[2]s port %[3]d
 neighbor %[2]s update-source %[1]s
 neighbor %[2]s timers connect 1
 address-family ipv4 unicast
  network 198.51.100.0/24
  network 198.51.101.0/24
  network 10.244.9.0/26
 exit-address-family
`, n[1], n[0], port)
	frr := startFRR(t, n[1], frrPort, conf)
	s := startSpeaker(t, n[0], port, speakerOpts{})
	pol := testPolicy
	pol.Filters = map[string]Filter{"frr": {ImportV4: []FilterRule{{Op: MatchEqual, CIDR: pfx("198.51.101.0/24")}}}}
	if err := s.SetPolicy(context.Background(), pol); err != nil {
		t.Fatal(err)
	}
	s.setPeers(t, Peer{Address: n[1], ASN: 65000, Type: PeerExternal, Port: frrPort, LocalAddress: n[0], Filters: []string{"frr"}})
	// FRR refuses a loopback next hop as martian: give the one a node
	// would have.
	s.advertise(t, Advertisement{Prefix: pfx("10.244.1.0/26"), NextHop: ip("198.18.0.1")})
	s.waitEstablished(t, n[1], 30*time.Second)
	testutil.Eventually(t, 15*time.Second, "learned from FRR", func() error {
		return routesEqual(s.subscribed(), routes("198.51.100.0/24", addrs(n[1])))
	})
	testutil.Eventually(t, 15*time.Second, "FRR learns our block", func() error {
		out, err := frr.vtysh("show bgp ipv4 unicast 10.244.1.0/26")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "198.18.0.1") || !strings.Contains(out, n[0].String()) {
			return fmt.Errorf("FRR has no path from %s via 198.18.0.1:\n%s", n[0], out)
		}
		return nil
	})
	// Held for a moment: the refused prefixes do not arrive late.
	time.Sleep(time.Second)
	if err := routesEqual(s.subscribed(), routes("198.51.100.0/24", addrs(n[1]))); err != nil {
		t.Error(err)
	}
	st, err := s.peerState(n[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FRR session: %d prefixes received (ours reflected back among them), 1 learned", st.PrefixesReceived)
}
