package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestGracefulRestart: 3 hosts and a BIRD ToR, graceful restart on (the
// default). An agent that restarts keeps its routes in BIRD and in the
// other hosts' kernels (never withdrawn) and traffic through it keeps
// flowing; a route withdrawn while an agent was down leaves that host's
// kernel once the restarted agent has re-synced with its peers.
func TestGracefulRestart(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 3, Workloads: 1, Peer: lab.PeerBird})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Run("RestartKeepsRoutesAndTraffic", func(t *testing.T) { testRestartKeepsRoutes(ctx, t, l) })
	t.Run("RouteWithdrawnWhileDownIsSwept", func(t *testing.T) { testStaleRouteSwept(ctx, t, l) })
}

func testRestartKeepsRoutes(ctx context.Context, t *testing.T, l *lab.Lab) {
	h1, err := l.Host("host1")
	if err != nil {
		t.Fatal(err)
	}
	w1, err := l.Workload("h1-w1")
	if err != nil {
		t.Fatal(err)
	}
	blk := blockOf(ctx, t, l, w1.IP())
	if blk.Node != h1.Name {
		t.Fatalf("h1-w1's block %s belongs to %q", blk.CIDR, blk.Node)
	}
	others := []string{"host2", "host3"}
	watches := map[string]*routeWatch{}
	for _, h := range others {
		k := openRoutes(t, l, h)
		testutil.Eventually(t, 10*time.Second, h+" routes host1's block", func() error { return k.expectVia(blk.CIDR, h1.IP) })
		watches[h] = watchRoutes(t, l, h)
	}
	testutil.Eventually(t, 10*time.Second, "BIRD routes host1's block", func() error { return torRouteVia(ctx, l, blk.CIDR, h1.IP) })
	w2, _ := l.Workload("h2-w1")
	pingers := []*pinger{
		startPinger(ctx, t, l, "h2-w1", w1.IP()),
		startPinger(ctx, t, l, "h3-w1", w1.IP()),
		startPinger(ctx, t, l, "h1-w1", w2.IP()),
	}
	bird := pollBird(ctx, l, blk.CIDR, h1.IP)

	logFrom := fileSize(h1.AgentLog)
	birdLog := filepath.Join(l.Dir(), "logs", "bird.log")
	birdFrom := fileSize(birdLog)
	start := time.Now()
	if err := l.RestartAgent(ctx, h1.Name); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(start)
	waitEstablished(t, l)
	established := time.Since(start)
	var synced time.Duration
	testutil.Eventually(t, 30*time.Second, "host1's BGP initial sync after the restart", func() error {
		at, ok := logTime(h1.AgentLog, logFrom, "BGP initial sync done")
		if !ok {
			return fmt.Errorf("no \"BGP initial sync done\" in %s yet", h1.AgentLog)
		}
		synced = at.Sub(start)
		return nil
	})
	// No NOTIFICATION reached the ToR: a Cease would have made it drop
	// host1's routes at once (RFC 4724). BIRD logs every NOTIFICATION it
	// receives ("host1: Received: ...").
	var birdSaw []string
	if data, err := os.ReadFile(birdLog); err == nil && int64(len(data)) >= birdFrom {
		for _, line := range strings.Split(string(data[birdFrom:]), "\n") {
			if strings.Contains(line, h1.Name+":") {
				birdSaw = append(birdSaw, strings.TrimSpace(line))
			}
			if strings.Contains(line, h1.Name+": Received:") {
				t.Errorf("the ToR received a NOTIFICATION during host1's graceful restart: %s", strings.TrimSpace(line))
			}
		}
	} else {
		t.Errorf("reading BIRD's log %s: %v", birdLog, err)
	}
	t.Logf("BIRD's log about host1 during the restart: %q", birdSaw)
	// A stale route not announced again would be dropped at our End-of-RIB:
	// watch a little longer.
	time.Sleep(time.Second)
	t.Logf("host1 restarted gracefully: agent ready after %s, every session Established after %s, BGP initial sync done after %s",
		ready.Round(time.Millisecond), established.Round(time.Millisecond), synced.Round(time.Millisecond))

	polls, misses := bird.stop()
	t.Logf("BIRD polled %d times for %s during the restart: %d without it", polls, blk.CIDR, len(misses))
	for i, m := range misses {
		if i < 5 {
			t.Errorf("BIRD lost host1's block during its graceful restart: %s", m)
		}
	}
	for _, h := range others {
		if err := watches[h].err(); err != nil {
			t.Error(err)
		}
		evs := watches[h].matching(blk.CIDR)
		t.Logf("%s: %d kernel change(s) of %s during the restart %v", h, len(evs), blk.CIDR, evs)
		for _, e := range watches[h].deletions(blk.CIDR) {
			t.Errorf("%s: host1's block was withdrawn from the kernel during the graceful restart: %s", h, e)
		}
	}
	// Control: the same watches do see a withdrawal (BIRD's static route).
	static := birdStaticProtocol(ctx, t, l)
	t.Cleanup(func() { _, _ = l.Birdc(context.Background(), "enable", static) })
	if _, err := l.Birdc(ctx, "disable", static); err != nil {
		t.Fatal(err)
	}
	tor := netip.MustParsePrefix(lab.TorStaticRoute)
	for _, h := range others {
		testutil.Eventually(t, 5*time.Second, h+" sees BIRD's withdrawal", func() error {
			if len(watches[h].deletions(tor)) == 0 {
				return fmt.Errorf("the route watch of %s saw no deletion of %s", h, tor)
			}
			return nil
		})
	}
	if _, err := l.Birdc(ctx, "enable", static); err != nil {
		t.Fatal(err)
	}
	for _, p := range pingers {
		s := p.stop()
		t.Logf("ping %s -> %s during the restart: %s", p.from, p.to, s)
		if s.replies < 10 {
			t.Errorf("ping %s -> %s: only %d replies; the pinger did not run through the restart", p.from, p.to, s.replies)
		}
		if len(s.lost) > 0 {
			t.Errorf("ping %s -> %s lost icmp_seq %v during the graceful restart", p.from, p.to, s.lost)
		}
	}
}

// testStaleRouteSwept: host2's agent is down while BIRD withdraws its static
// route; host2's kernel keeps the route (nobody runs to remove it) until the
// restarted agent has BIRD's End-of-RIB, then it goes. The other learned
// routes stay throughout.
func testStaleRouteSwept(ctx context.Context, t *testing.T, l *lab.Lab) {
	h2, err := l.Host("host2")
	if err != nil {
		t.Fatal(err)
	}
	tor := netip.MustParsePrefix(lab.TorStaticRoute)
	kernels := hostRoutes(t, l)
	for name, k := range kernels {
		testutil.Eventually(t, 10*time.Second, name+" installs "+tor.String(), func() error { return k.expectVia(tor, lab.TorIP) })
	}
	kept := map[netip.Prefix]string{} // host2's learned routes that must survive its restart, and their next hop
	for _, name := range []string{"h1-w1", "h3-w1"} {
		w, err := l.Workload(name)
		if err != nil {
			t.Fatal(err)
		}
		b := blockOf(ctx, t, l, w.IP())
		kept[b.CIDR] = nodeIP(t, l, b.Node)
		if err := kernels[h2.Name].expectVia(b.CIDR, kept[b.CIDR]); err != nil {
			t.Fatal(err)
		}
	}
	watch := watchRoutes(t, l, h2.Name)

	if err := l.StopAgent(h2.Name); err != nil {
		t.Fatal(err)
	}
	static := birdStaticProtocol(ctx, t, l)
	t.Cleanup(func() { _, _ = l.Birdc(context.Background(), "enable", static) })
	if _, err := l.Birdc(ctx, "disable", static); err != nil {
		t.Fatal(err)
	}
	running := map[string]*nsRoutes{"host1": kernels["host1"], "host3": kernels["host3"]}
	if _, err := timeUntil(time.Now(), 5*time.Second, running, func(k *nsRoutes) error { return k.expectNone(tor) }); err != nil {
		t.Fatalf("BIRD's withdrawal did not reach the running agents: %v", err)
	}
	if err := kernels[h2.Name].expectVia(tor, lab.TorIP); err != nil {
		t.Fatalf("with its agent stopped, host2 should keep %s: %v", tor, err)
	}

	logFrom := fileSize(h2.AgentLog)
	start := time.Now()
	if err := l.StartAgent(ctx, h2.Name); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(start)
	gone, err := timeUntil(start, 30*time.Second, map[string]*nsRoutes{h2.Name: kernels[h2.Name]}, func(k *nsRoutes) error { return k.expectNone(tor) })
	if err != nil {
		t.Fatalf("the route BIRD withdrew while host2's agent was down: %v", err)
	}
	syncMsg := "not logged"
	if at, ok := logTime(h2.AgentLog, logFrom, "BGP initial sync done"); ok {
		syncMsg = at.Sub(start).Round(time.Millisecond).String()
	}
	t.Logf("host2's agent ready after %s, BGP initial sync done after %s, stale %s swept after %s",
		ready.Round(time.Millisecond), syncMsg, tor, gone[h2.Name].Round(time.Millisecond))

	for p, via := range kept {
		for _, e := range watch.deletions(p) {
			t.Errorf("host2 deleted %s while its agent restarted: %s", p, e)
		}
		if err := kernels[h2.Name].expectVia(p, via); err != nil {
			t.Error(err)
		}
	}
	if err := watch.err(); err != nil {
		t.Error(err)
	}
	if len(watch.deletions(tor)) == 0 {
		t.Errorf("the route watch of host2 missed the sweep of %s: it cannot be trusted to see the others", tor)
	}

	// The session works: BIRD's announcement comes back to host2.
	if _, err := l.Birdc(ctx, "enable", static); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "host2 learns "+tor.String()+" again", func() error { return kernels[h2.Name].expectVia(tor, lab.TorIP) })
	waitEstablished(t, l)
}

func nodeIP(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	h, err := l.Host(node)
	if err != nil {
		t.Fatal(err)
	}
	return h.IP
}

// pinger runs one `ping -i 0.1` from a lab namespace until stop.
type pinger struct {
	from, to string
	cmd      *exec.Cmd
	out      bytes.Buffer
	done     chan struct{}
}

func startPinger(ctx context.Context, t *testing.T, l *lab.Lab, from, to string) *pinger {
	t.Helper()
	p := &pinger{from: from, to: to, done: make(chan struct{})}
	cmd, err := l.Command(ctx, from, "ping", "-n", "-i", "0.1", "-W", "1", to)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("ping from %s: %v", from, err)
	}
	p.cmd = cmd
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

type pingStats struct {
	sent, replies int
	lost          []int // sequence numbers without a reply, before the last reply
}

func (s pingStats) String() string {
	return fmt.Sprintf("%d sent, %d replies, lost %v", s.sent, s.replies, s.lost)
}

var (
	replySeqRE = regexp.MustCompile(`bytes from .*icmp_seq=(\d+)`)
	sentRE     = regexp.MustCompile(`(\d+) packets transmitted`)
)

// stop interrupts ping and reads its output. Losses are the gaps in the
// reply sequence numbers: the one probe in flight when SIGINT lands (its
// reply takes ~0.1 ms of every 100 ms) is not counted as lost.
func (p *pinger) stop() pingStats {
	_ = p.cmd.Process.Signal(syscall.SIGINT) // `ip netns exec` execs in place: this is ping
	<-p.done
	var s pingStats
	got := map[int]bool{}
	maxSeq := 0
	for _, m := range replySeqRE.FindAllStringSubmatch(p.out.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		if !got[n] {
			got[n] = true
			s.replies++
		}
		maxSeq = max(maxSeq, n)
	}
	for i := 1; i < maxSeq; i++ {
		if !got[i] {
			s.lost = append(s.lost, i)
		}
	}
	if m := sentRE.FindStringSubmatch(p.out.String()); m != nil {
		s.sent, _ = strconv.Atoi(m[1])
	}
	return s
}

// birdPoll checks every 50 ms that BIRD has p via nh.
type birdPoll struct {
	mu     sync.Mutex
	polls  int
	misses []string
	quit   chan struct{}
	done   chan struct{}
}

func pollBird(ctx context.Context, l *lab.Lab, p netip.Prefix, nh string) *birdPoll {
	b := &birdPoll{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			err := torRouteVia(ctx, l, p, nh)
			b.mu.Lock()
			b.polls++
			if err != nil {
				b.misses = append(b.misses, time.Now().Format("15:04:05.000")+": "+err.Error())
			}
			b.mu.Unlock()
			select {
			case <-b.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return b
}

func (b *birdPoll) stop() (int, []string) {
	close(b.quit)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.polls, b.misses
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

var logTimeRE = regexp.MustCompile(`time=(\S+)`)

// logTime finds the first line after offset in an agent's (slog text) log
// that holds msg, and returns its time.
func logTime(path string, offset int64, msg string) (time.Time, bool) {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) < offset {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(data[offset:]), "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		if m := logTimeRE.FindStringSubmatch(line); m != nil {
			if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				return at, true
			}
		}
	}
	return time.Time{}, false
}
