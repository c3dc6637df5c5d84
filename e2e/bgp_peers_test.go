package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// Subtests of TestBGPWithdrawalsAndPeers about BGPPeer configuration.

const (
	md5PeerIP    = "198.18.0.241"
	md5PeerAS    = 65001
	md5Secret    = "s3cret"
	md5PeerRoute = "192.0.2.0/24"
	// ghostPeerIP is on the fabric, but nobody answers there.
	ghostPeerIP = "198.18.0.240"
)

// md5BirdConfig: a BIRD that requires the password from host1 and host2.
// It only listens: on this kernel the agent cannot put an MD5 key on its
// listening socket (docs/bgp.md), so password sessions are the ones the
// agent dials.
func md5BirdConfig() string {
	return fmt.Sprintf(`router id %[1]s;
log stderr all;
protocol device { scan time 10; }
protocol static { ipv4; route %[4]s blackhole; }
template bgp calyxhost {
	local %[1]s as %[2]d;
	passive on;
	password "%[3]s";
	error wait time 1, 10;
	ipv4 { import all; export all; };
}
protocol bgp host1 from calyxhost { neighbor %[5]s as %[6]d; }
protocol bgp host2 from calyxhost { neighbor %[7]s as %[6]d; }
`, md5PeerIP, md5PeerAS, md5Secret, md5PeerRoute, lab.HostIP(1), lab.NodeAS, lab.HostIP(2))
}

func md5PeerYAML(name, node, password string) string {
	return fmt.Sprintf(`apiVersion: calyx.dev/v1
kind: BGPPeer
metadata: {name: %s}
spec: {peerIP: %s, asNumber: %d, node: %s, password: %q}
`, name, md5PeerIP, md5PeerAS, node, password)
}

// testMD5Password: host1's BGPPeer has BIRD's password and comes up (and
// learns BIRD's route); host2's has a wrong one and stays down while BIRD's
// kernel counts MD5 failures; once host2's password is corrected, it comes
// up too.
func testMD5Password(ctx context.Context, t *testing.T, l *lab.Lab) {
	bird := startExtraBird(t, l, md5PeerIP, md5BirdConfig())
	apply := func(yaml string) {
		t.Helper()
		if _, stderr, code := calyxctl(ctx, t, l, "host1", "apply", "-f", writeTemp(t, "peer.yaml", yaml)); code != 0 {
			t.Fatalf("calyxctl apply: exit %d: %s", code, stderr)
		}
	}
	apply(md5PeerYAML("md5-right", "host1", md5Secret) + "---\n" + md5PeerYAML("md5-wrong", "host2", "not-the-"+md5Secret))
	t.Cleanup(func() { removePeers(t, l, []string{"md5-right", "md5-wrong"}, md5PeerIP) })

	testutil.Eventually(t, 30*time.Second, "host1's MD5 session to BIRD", func() error {
		return sessionUp(ctx, l, bird, "host1")
	})
	k1 := openRoutes(t, l, "host1")
	testutil.Eventually(t, 10*time.Second, "host1 installs BIRD's route over the MD5 session", func() error {
		return k1.expectVia(netip.MustParsePrefix(md5PeerRoute), md5PeerIP)
	})

	// Wrong password: several connection attempts, none gets through.
	failuresBefore := md5Failures(ctx, t, bird)
	seen := map[string]bool{}
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		p, err := peerOf(ctx, l, "host2", md5PeerIP)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil {
			continue // the agent has not configured it yet
		}
		seen[p.GetState().String()] = true
		if p.GetState() == apipb.BGPSessionState_BGP_SESSION_STATE_ESTABLISHED {
			t.Fatalf("host2's session to %s is Established with a wrong password", md5PeerIP)
		}
		if up, err := bird.established(ctx, "host2"); err != nil || up {
			t.Fatalf("BIRD's session to host2 with a wrong password: established %v, %v", up, err)
		}
	}
	if len(seen) == 0 {
		t.Fatalf("host2 never listed its BGPPeer %s", md5PeerIP)
	}
	failures := md5Failures(ctx, t, bird) - failuresBefore
	t.Logf("wrong password: host2's session was %v for 6 s; BIRD's kernel rejected %d segment(s) for a bad MD5 signature", keys(seen), failures)
	if failures == 0 {
		t.Errorf("BIRD's kernel saw no MD5 failure: host2 did not try to connect, or sent no signature")
	}

	// With the right password, host2 comes up as well: the password was
	// the only thing wrong.
	apply(md5PeerYAML("md5-wrong", "host2", md5Secret))
	testutil.Eventually(t, 30*time.Second, "host2's MD5 session once its password is right", func() error {
		return sessionUp(ctx, l, bird, "host2")
	})
}

// sessionUp checks both ends of host's session to the extra BIRD.
func sessionUp(ctx context.Context, l *lab.Lab, bird *extraBird, host string) error {
	p, err := peerOf(ctx, l, host, bird.IP)
	if err != nil {
		return err
	}
	if p == nil || p.GetState() != apipb.BGPSessionState_BGP_SESSION_STATE_ESTABLISHED {
		return fmt.Errorf("%s: session to %s is %v", host, bird.IP, p)
	}
	if up, err := bird.established(ctx, host); err != nil || !up {
		return fmt.Errorf("BIRD's session to %s: established %v, %v", host, up, err)
	}
	return nil
}

// md5Failures reads TcpExt TCPMD5Failure of BIRD's namespace: segments
// whose MD5 signature did not match the key.
func md5Failures(ctx context.Context, t *testing.T, bird *extraBird) int {
	t.Helper()
	out, err := execIn(ctx, bird.Netns, "cat", "/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(names) != len(values) {
			continue
		}
		for j, n := range names {
			if n == "TCPMD5Failure" {
				v, _ := strconv.Atoi(values[j])
				return v
			}
		}
	}
	t.Fatalf("no TcpExt TCPMD5Failure in /proc/net/netstat of %s", bird.Netns)
	return 0
}

// removePeers deletes BGPPeers and waits until no agent lists addr any
// more, so that the next subtest finds the sessions it expects.
func removePeers(t *testing.T, l *lab.Lab, names []string, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range names {
		if _, stderr, code := calyxctl(ctx, t, l, "host1", "delete", "BGPPeer", n); code != 0 && !strings.Contains(stderr, "not found") {
			t.Errorf("calyxctl delete BGPPeer %s: exit %d: %s", n, code, stderr)
		}
	}
	testutil.Eventually(t, 15*time.Second, "the agents drop the peer "+addr, func() error {
		for _, h := range l.Hosts() {
			if p, err := peerOf(ctx, l, h.Name, addr); err != nil || p != nil {
				return fmt.Errorf("%s still lists %s (%v)", h.Name, addr, err)
			}
		}
		return nil
	})
}

// testInvalidPeerRejected: calyxctl apply refuses a BGPPeer with an invalid
// AS or address, exits non-zero naming the resource and the field, and
// writes nothing, not even the valid documents of the same file.
func testInvalidPeerRejected(ctx context.Context, t *testing.T, l *lab.Lab) {
	peer := func(name, spec string) string {
		return fmt.Sprintf("apiVersion: calyx.dev/v1\nkind: BGPPeer\nmetadata: {name: %s}\nspec: %s\n", name, spec)
	}
	cases := []struct {
		name, file, field string
		names             []string // every peer of the file, none may be written
	}{
		{"AS_TRANS", peer("bad-as", "{peerIP: 198.18.0.242, asNumber: 23456}"), "spec.asNumber", []string{"bad-as"}},
		{"no AS", peer("no-as", "{peerIP: 198.18.0.242}"), "spec.asNumber", []string{"no-as"}},
		{"address out of range", peer("bad-ip", "{peerIP: 198.18.0.300, asNumber: 65002}"), "spec.peerIP", []string{"bad-ip"}},
		{"host name as address", peer("name-ip", "{peerIP: tor.example, asNumber: 65002}"), "spec.peerIP", []string{"name-ip"}},
		{"multicast address", peer("mc-ip", "{peerIP: 224.0.0.5, asNumber: 65002}"), "spec.peerIP", []string{"mc-ip"}},
		{"valid and invalid in one file",
			peer("fine-peer", "{peerIP: 198.18.0.242, asNumber: 65002}") + "---\n" + peer("bad-ip2", "{peerIP: 198.18.0.2420, asNumber: 65002}"),
			"spec.peerIP", []string{"fine-peer", "bad-ip2"}},
	}
	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		stdout, stderr, code := calyxctl(ctx, t, l, "host1", "apply", "-f", writeTemp(t, "peer.yaml", c.file))
		bad := c.names[len(c.names)-1]
		t.Logf("%s: exit %d: %s", c.name, code, strings.TrimSpace(stderr))
		if code == 0 {
			t.Errorf("%s: calyxctl apply exited 0 (stdout %q)", c.name, stdout)
		}
		if !strings.Contains(stderr, c.field) || !strings.Contains(stderr, bad) {
			t.Errorf("%s: stderr %q does not name the resource %s and the field %s", c.name, stderr, bad, c.field)
		}
		for _, n := range c.names {
			if _, err := ds.Get(ctx, datastore.KindBGPPeer, n); !errors.Is(err, datastore.ErrNotFound) {
				t.Errorf("%s: BGPPeer %s is in etcd after a refused apply (err %v)", c.name, n, err)
			}
		}
	}
	if p, err := peerOf(ctx, l, "host1", "198.18.0.242"); err != nil || p != nil {
		t.Errorf("host1 peers with 198.18.0.242 after refused applies: %v %v", p, err)
	}
}

// testUnreachablePeer: a BGPPeer nobody answers stays in Idle, Connect or
// Active, `calyxctl node status` shows it so, and the other sessions are
// not reset and traffic keeps flowing.
func testUnreachablePeer(ctx context.Context, t *testing.T, l *lab.Lab) {
	before, err := sessionsSince(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	ghost := fmt.Sprintf("apiVersion: calyx.dev/v1\nkind: BGPPeer\nmetadata: {name: ghost}\nspec: {peerIP: %s, asNumber: 65002}\n", ghostPeerIP)
	if _, stderr, code := calyxctl(ctx, t, l, "host1", "apply", "-f", writeTemp(t, "ghost.yaml", ghost)); code != 0 {
		t.Fatalf("calyxctl apply: exit %d: %s", code, stderr)
	}
	t.Cleanup(func() { removePeers(t, l, []string{"ghost"}, ghostPeerIP) })

	down := map[apipb.BGPSessionState]bool{
		apipb.BGPSessionState_BGP_SESSION_STATE_IDLE:    true,
		apipb.BGPSessionState_BGP_SESSION_STATE_CONNECT: true,
		apipb.BGPSessionState_BGP_SESSION_STATE_ACTIVE:  true,
	}
	testutil.Eventually(t, 15*time.Second, "every agent lists the unreachable peer", func() error {
		for _, h := range l.Hosts() {
			if p, err := peerOf(ctx, l, h.Name, ghostPeerIP); err != nil || p == nil {
				return fmt.Errorf("%s: no peer %s (%v)", h.Name, ghostPeerIP, err)
			}
		}
		return nil
	})
	seen := map[string]bool{}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, h := range l.Hosts() {
			p, err := peerOf(ctx, l, h.Name, ghostPeerIP)
			if err != nil {
				t.Fatal(err)
			}
			if p == nil || !down[p.GetState()] {
				t.Fatalf("%s: unreachable peer %s is %v, want Idle, Connect or Active", h.Name, ghostPeerIP, p)
			}
			seen[p.GetState().String()] = true
		}
	}
	t.Logf("unreachable peer states seen: %v", keys(seen))

	out, stderr, code := calyxctl(ctx, t, l, "host1", "node", "status")
	if code != 0 {
		t.Fatalf("calyxctl node status: exit %d: %s", code, stderr)
	}
	var line string
	for _, ln := range strings.Split(out, "\n") {
		if strings.HasPrefix(ln, ghostPeerIP+" ") {
			line = ln
		}
	}
	if f := strings.Fields(line); len(f) < 4 || !(f[3] == "Idle" || f[3] == "Connect" || f[3] == "Active") {
		t.Errorf("calyxctl node status shows the unreachable peer as %q, want state Idle, Connect or Active:\n%s", line, out)
	}

	after, err := sessionsSince(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	for k, since := range before {
		if got, ok := after[k]; !ok || got != since {
			t.Errorf("session %s was reset by the unreachable peer (established since %d, now %d, still up %v)", k, since, got, ok)
		}
	}
	eps := l.Endpoints(false)
	m := l.PingMatrix(ctx, eps, eps, 8)
	if len(m.Failed()) > 0 {
		t.Errorf("traffic with an unreachable peer configured:\n%s", m)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// execIn runs argv in a namespace of the test's own.
func execIn(ctx context.Context, netns string, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns}, argv...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", netns, strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}
