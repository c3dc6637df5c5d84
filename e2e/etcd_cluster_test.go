package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cnitypes "github.com/containernetworking/cni/pkg/types"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestEtcdClusterMemberLoss: the lab's etcd is a 3-member Raft cluster,
// with CNI ADD/DEL churning on both hosts and pings running between two
// workloads all along.
//
//   - The leader is killed (SIGKILL): ADD and DEL keep working (a request
//     caught by the election is retried by the agent), a policy applied
//     now takes effect and goes again, a new workload's route reaches the
//     other host.
//   - A second member is killed: the cluster has no quorum. ADD fails fast
//     with CNI code 11 ("try again later"), well before the agent's etcd
//     budget would run out, and leaves nothing behind; the agents report
//     not ready; traffic keeps flowing.
//   - Both come back: they catch up with the cluster (same revision) and
//     ADD works again.
//
// At the end: not one echo lost, no address handed out twice, and nothing
// leaked (IPAM holds exactly the live workloads' addresses, every host
// has exactly one cx interface per workload).
func TestEtcdClusterMemberLoss(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 2, Workloads: 1, EtcdMembers: 3})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w1, _ := l.Workload("h1-w1")
	w2, _ := l.Workload("h2-w1")
	guard, err := l.AddWorkload(ctx, "guard", "host2", map[string]string{"role": "guard"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "h1-w1 reaches h2-w1 and guard", func() error {
		return errors.Join(l.Ping(w1.Name, w2.IP()), l.Ping(w1.Name, guard.IP()))
	})
	ping12 := startPinger(ctx, t, l, w1.Name, w2.IP())
	ping21 := startPinger(ctx, t, l, w2.Name, w1.IP())
	churn := startChurn(ctx, t, l)
	churn.waitProgress(t, 4, 30*time.Second, "before any member is lost")

	// One member lost: the leader, the hardest case.
	leader, err := l.EtcdLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StopEtcdMember(leader, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the leader %s", leader)
	churn.waitProgress(t, 6, 30*time.Second, "with "+leader+" lost")
	testutil.Eventually(t, 10*time.Second, "a new leader", func() error {
		_, err := l.EtcdLeader(ctx)
		return err
	})
	checkPolicyApplies(ctx, t, l, w1.Name, guard.IP())
	fresh, err := l.AddWorkload(ctx, "after-leader-loss", "host2", nil)
	if err != nil {
		t.Fatalf("ADD with one member lost: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "the new workload's route reaches host1", func() error { return l.Ping(w1.Name, fresh.IP()) })

	// Two members lost: no quorum.
	churn.pause(t)
	var second string
	for _, m := range l.EtcdMembers() {
		if m.Name != leader {
			second = m.Name
			break
		}
	}
	if err := l.StopEtcdMember(second, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s too: one member of three left", second)
	waitAgentReady(ctx, t, l, "host1", false, 15*time.Second)
	before, _ := l.Exec("host1", "ip", "-o", "link", "show")
	start := time.Now()
	_, err = l.AddWorkload(ctx, "no-quorum", "host1", nil)
	took := time.Since(start)
	if err == nil {
		t.Fatal("CNI ADD succeeded without quorum")
	}
	t.Logf("ADD without quorum failed in %s: %v", took.Round(time.Millisecond), err)
	var ce *cnitypes.Error
	if !errors.As(err, &ce) || ce.Code != 11 {
		t.Errorf("ADD without quorum: want CNI code 11 (try again later), got %v", err)
	}
	// Fast: well inside the 5 s the agent gives an etcd step (and the
	// namespace and the plugin's exec are in this time too).
	if took > 3500*time.Millisecond {
		t.Errorf("ADD without quorum took %s to fail; want it to fail fast", took)
	}
	if after, _ := l.Exec("host1", "ip", "-o", "link", "show"); strings.Count(after, " cx") != strings.Count(before, " cx") {
		t.Errorf("the failed ADD left an interface on host1:\nbefore %s\nafter %s", before, after)
	}
	time.Sleep(2 * time.Second) // traffic over a while without quorum

	// Both back: they catch up and the cluster works again.
	for _, name := range []string{second, leader} {
		if err := l.StartEtcdMember(ctx, name); err != nil {
			t.Fatalf("restarting %s: %v", name, err)
		}
	}
	testutil.Eventually(t, 30*time.Second, "every member at the same revision", func() error {
		var revs []string
		same := true
		sts := l.EtcdStatus(ctx)
		for _, s := range sts {
			if !s.Up {
				return fmt.Errorf("%s: %s", s.Name, s.Err)
			}
			revs = append(revs, fmt.Sprintf("%s@%d", s.Name, s.Revision))
			same = same && s.Revision == sts[0].Revision
		}
		if !same {
			return fmt.Errorf("members not caught up: %s", strings.Join(revs, " "))
		}
		return nil
	})
	waitAgentReady(ctx, t, l, "host1", true, 20*time.Second)
	churn.resume()
	churn.waitProgress(t, 4, 30*time.Second, "with every member back")
	res := churn.stop(t)
	t.Logf("churn: %s", res)

	for _, p := range []*pinger{ping12, ping21} {
		st := p.stop()
		t.Logf("ping %s -> %s over the member losses: %s", p.from, p.to, st)
		if st.replies == 0 || len(st.lost) > 0 {
			t.Errorf("traffic %s -> %s was disturbed: %s", p.from, p.to, st)
		}
	}
	if len(res.duplicates) > 0 {
		t.Errorf("addresses handed out twice: %v", res.duplicates)
	}
	checkNothingLeaked(ctx, t, l)
}

// waitAgentReady waits until host's agent reports ready (or not).
func waitAgentReady(ctx context.Context, t *testing.T, l *lab.Lab, host string, ready bool, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, fmt.Sprintf("%s reports ready=%v", host, ready), func() error {
		st, err := l.NodeStatus(ctx, host)
		if err != nil {
			return err
		}
		if st.GetReady() != ready {
			return fmt.Errorf("%s reports ready=%v", host, st.GetReady())
		}
		return nil
	})
}

// checkPolicyApplies applies a policy that shuts the guard workload's
// ingress, waits until from cannot reach it, deletes the policy and waits
// until it can again.
func checkPolicyApplies(ctx context.Context, t *testing.T, l *lab.Lab, from, guardIP string) {
	t.Helper()
	const deny = `apiVersion: calyx.dev/v1
kind: Policy
metadata:
  name: guard-closed
spec:
  selector: role == "guard"
  types: [Ingress]
`
	if err := l.Apply(ctx, []byte(deny)); err != nil {
		t.Fatalf("applying a policy with a member lost: %v", err)
	}
	testutil.Eventually(t, 15*time.Second, "the policy shuts guard", func() error {
		if l.Ping(from, guardIP) == nil {
			return errors.New("guard still answers")
		}
		return nil
	})
	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Delete(ctx, datastore.KindPolicy, "guard-closed"); err != nil {
		t.Fatalf("deleting the policy: %v", err)
	}
	testutil.Eventually(t, 15*time.Second, "guard open again", func() error { return l.Ping(from, guardIP) })
}

// checkNothingLeaked: IPAM holds exactly the live workloads' addresses and
// every host has one cx interface per workload on it.
func checkNothingLeaked(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	if out, stderr, code := calyxctl(ctx, t, l, "host1", "ipam", "check"); code != 0 {
		t.Errorf("ipam check: %s %s", out, stderr)
	}
	used := 0
	for _, b := range blocks(ctx, t, l) {
		used += b.Used
	}
	if want := len(l.Workloads()); used != want {
		t.Errorf("IPAM holds %d addresses for %d workloads", used, want)
	}
	perHost := map[string]int{}
	seen := map[string]string{}
	for _, w := range l.Workloads() {
		perHost[w.Host]++
		for _, ip := range w.IPs {
			if other, ok := seen[ip]; ok {
				t.Errorf("%s and %s both hold %s", other, w.Name, ip)
			}
			seen[ip] = w.Name
		}
	}
	for _, h := range l.Hosts() {
		out, err := l.Exec(h.Name, "ip", "-o", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out, ": cx"); n != perHost[h.Name] {
			t.Errorf("%s has %d cx interfaces for %d workloads:\n%s", h.Name, n, perHost[h.Name], out)
		}
	}
}

// churn adds and deletes workloads on both hosts in turn, as a runtime
// would: an ADD or DEL failing with code 11 is retried.
type churn struct {
	mu         sync.Mutex
	adds, dels int
	retries    int
	duplicates []string
	err        error
	paused     bool
	idle       chan struct{} // closed when a pause took effect
	quit, done chan struct{}
}

type churnResult struct {
	adds, dels, retries int
	duplicates          []string
}

func (r churnResult) String() string {
	return fmt.Sprintf("%d ADDs, %d DELs, %d retried after code 11", r.adds, r.dels, r.retries)
}

func startChurn(ctx context.Context, t *testing.T, l *lab.Lab) *churn {
	c := &churn{quit: make(chan struct{}), done: make(chan struct{})}
	go c.run(ctx, l)
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			close(c.quit)
			<-c.done
		}
	})
	return c
}

func (c *churn) run(ctx context.Context, l *lab.Lab) {
	defer close(c.done)
	var live []string // at most two churn workloads alive at a time
	for i := 0; ; i++ {
		select {
		case <-c.quit:
			return
		case <-ctx.Done():
			return
		default:
		}
		c.mu.Lock()
		if c.paused {
			if c.idle != nil {
				close(c.idle)
				c.idle = nil
			}
			c.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			i--
			continue
		}
		c.mu.Unlock()
		if len(live) >= 2 {
			if err := retryTransient(ctx, c, func() error { return l.DelWorkload(ctx, live[0]) }); err != nil {
				c.fail(fmt.Errorf("DEL %s: %w", live[0], err))
				return
			}
			live = live[1:]
			c.mu.Lock()
			c.dels++
			c.mu.Unlock()
		}
		name := fmt.Sprintf("churn-%d", i)
		var w lab.Workload
		err := retryTransient(ctx, c, func() error {
			var err error
			w, err = l.AddWorkload(ctx, name, lab.HostName(1+i%2), nil)
			return err
		})
		if err != nil {
			c.fail(fmt.Errorf("ADD %s: %w", name, err))
			return
		}
		live = append(live, name)
		c.mu.Lock()
		c.adds++
		for _, o := range l.Workloads() {
			if o.Name != w.Name && o.IP() == w.IP() {
				c.duplicates = append(c.duplicates, fmt.Sprintf("%s and %s: %s", o.Name, w.Name, w.IP()))
			}
		}
		c.mu.Unlock()
	}
}

// retryTransient retries fn while it fails with CNI code 11, for up to 30 s.
func retryTransient(ctx context.Context, c *churn, fn func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := fn()
		var ce *cnitypes.Error
		if err == nil || !errors.As(err, &ce) || ce.Code != 11 || time.Now().After(deadline) {
			return err
		}
		c.mu.Lock()
		c.retries++
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *churn) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// waitProgress waits until n more ADDs and n more DELs are done.
func (c *churn) waitProgress(t *testing.T, n int, timeout time.Duration, what string) {
	t.Helper()
	c.mu.Lock()
	adds, dels := c.adds+n, c.dels+n
	c.mu.Unlock()
	testutil.Eventually(t, timeout, fmt.Sprintf("%d ADDs and DELs %s", n, what), func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.err != nil {
			t.Fatalf("churn %s: %v", what, c.err)
		}
		if c.adds < adds || c.dels < dels {
			return fmt.Errorf("%d ADDs and %d DELs so far", c.adds, c.dels)
		}
		return nil
	})
}

// pause stops the churn after the call in progress.
func (c *churn) pause(t *testing.T) {
	t.Helper()
	idle := make(chan struct{})
	c.mu.Lock()
	c.paused, c.idle = true, idle
	c.mu.Unlock()
	select {
	case <-idle:
	case <-c.done:
	case <-time.After(60 * time.Second):
		t.Fatal("churn did not pause")
	}
}

func (c *churn) resume() {
	c.mu.Lock()
	c.paused = false
	c.mu.Unlock()
}

// stop ends the churn; its last workloads stay, as live ones.
func (c *churn) stop(t *testing.T) churnResult {
	t.Helper()
	close(c.quit)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Errorf("churn: %v", c.err)
	}
	return churnResult{adds: c.adds, dels: c.dels, retries: c.retries, duplicates: c.duplicates}
}
