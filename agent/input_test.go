package agent_test

// Bad policy input fails safe (issue 12): a policy overwritten in etcd with
// bytes that do not decode, or with one the policy dataplane cannot
// compile, leaves the rules in force as they were and makes /readyz fail,
// naming the resource and the reason, until it is fixed or deleted.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/testutil"
)

// cxRules is the agent's rules in the host namespace (its -A lines of cx-
// chains), without counters: what a refused input must not change.
func (h *host) cxRules() string {
	var out []string
	for _, l := range strings.Split(h.iptablesSave(), "\n") {
		if strings.HasPrefix(l, "-A cx") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitReadyz waits until /readyz answers code with a body holding every
// one of want.
func (h *host) waitReadyz(code int, want ...string) {
	h.t.Helper()
	h.waitReadyzWithin(15*time.Second, code, want...)
}

func (h *host) waitReadyzWithin(within time.Duration, code int, want ...string) {
	h.t.Helper()
	testutil.Eventually(h.t, within, fmt.Sprintf("/readyz %d %q", code, want), func() error {
		got, body, err := h.healthGet("/readyz")
		if err != nil {
			return err
		}
		if got != code {
			return fmt.Errorf("answered %d: %s", got, body)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				return fmt.Errorf("answered %d without %q: %s", got, w, body)
			}
		}
		return nil
	})
}

func (h *host) etcdPut(key, value string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.etcdClient().Put(ctx, key, value); err != nil {
		h.t.Fatalf("etcd put %s: %v", key, err)
	}
}

func TestBadPolicyInputFailsSafe(t *testing.T) {
	h := newHost(t, hostOptions{})
	a, b := h.newWorkload("a"), h.newWorkload("b")
	h.add(a)
	h.add(b)
	if err := pingFrom(a.name, b.ip); err != nil {
		t.Fatalf("before any policy: %v", err)
	}
	pol := "apiVersion: calyx.dev/v1\nkind: Policy\nmetadata: {name: deny-in}\nspec: {selector: all(), types: [Ingress]}\n"
	if out, err := h.calyxctl(pol, "apply", "-f", "-"); err != nil {
		t.Fatalf("calyxctl apply: %v\n%s", err, out)
	}
	testutil.Eventually(t, 15*time.Second, "the deny policy in force", func() error {
		if pingFrom(a.name, b.ip) == nil {
			return fmt.Errorf("ping %s -> %s still passes", a.name, b.ip)
		}
		return nil
	})
	h.waitReadyz(http.StatusOK)
	rules := h.cxRules()
	key := datastore.Key(datastore.KindPolicy, "deny-in")

	check := func(what string) {
		t.Helper()
		if got := h.cxRules(); got != rules {
			t.Errorf("%s: the rules changed:\n%s\nwant:\n%s", what, got, rules)
		}
		if pingFrom(a.name, b.ip) == nil {
			t.Errorf("%s: ping %s -> %s passes: the deny policy is no longer in force", what, a.name, b.ip)
		}
	}

	// Garbage bytes: not decodable.
	h.etcdPut(key, "\x00\x01 not a policy {")
	h.waitReadyz(http.StatusServiceUnavailable, "input:", "Policy/deny-in", "cannot be decoded")
	if got := h.metrics().value("calyx_resources_not_in_force", "reason", "undecodable"); got != 1 {
		t.Errorf("calyx_resources_not_in_force{reason=undecodable} = %v, want 1", got)
	}
	time.Sleep(resync + time.Second) // a periodic resync must not drop it either
	check("undecodable policy")

	// Decodes, but the dataplane cannot compile it.
	h.etcdPut(key, `{"apiVersion":"calyx.dev/v1","kind":"Policy","metadata":{"name":"deny-in"},"spec":{"selector":"all((","types":["Ingress"]}}`)
	h.waitReadyz(http.StatusServiceUnavailable, "Policy/deny-in refused")
	if got := h.metrics().value("calyx_resources_not_in_force", "reason", "refused"); got != 1 {
		t.Errorf("calyx_resources_not_in_force{reason=refused} = %v, want 1", got)
	}
	check("uncompilable policy")

	// Fixed: ready again, the policy still in force.
	if out, err := h.calyxctl(pol, "apply", "-f", "-"); err != nil {
		t.Fatalf("calyxctl apply: %v\n%s", err, out)
	}
	h.waitReadyz(http.StatusOK)
	check("fixed policy")

	// Spoiled again, then deleted: ready, and the deny is gone.
	h.etcdPut(key, "garbage")
	h.waitReadyz(http.StatusServiceUnavailable, "Policy/deny-in")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.etcdClient().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	h.waitReadyz(http.StatusOK)
	testutil.Eventually(t, 15*time.Second, "traffic once the policy is deleted", func() error { return pingFrom(a.name, b.ip) })
}

// A program holding the xtables lock (a private lock file, the legacy
// backend, which is the one that takes it) fails the agent's policy writes
// after the lock timeout instead of stalling them; after 3 in a row /readyz
// says why. Released: the write goes through and the agent is ready.
func TestStuckXtablesLockShowsInReadyz(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/usr/sbin/iptables-legacy-restore"); err != nil {
		t.Skip("needs iptables-legacy (only the legacy backend takes the xtables lock)")
	}
	lockFile := filepath.Join(t.TempDir(), "xtables.lock")
	h := newHost(t, hostOptions{env: []string{"XTABLES_LOCKFILE=" + lockFile, "CALYX_IPTABLES_BACKEND=legacy"}})
	a, b := h.newWorkload("a"), h.newWorkload("b")
	h.add(a)
	h.add(b)
	h.waitReadyz(http.StatusOK)

	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	pol := "apiVersion: calyx.dev/v1\nkind: Policy\nmetadata: {name: deny-in}\nspec: {selector: all(), types: [Ingress]}\n"
	if out, err := h.calyxctl(pol, "apply", "-f", "-"); err != nil {
		t.Fatalf("calyxctl apply: %v\n%s", err, out)
	}
	// 3 writes of 5 s each, with 100 and 200 ms of backoff between them.
	h.waitReadyzWithin(40*time.Second, http.StatusServiceUnavailable, "policy:", "writes in a row failed", "xtables lock is held by another program for more than 5s")
	t.Logf("/readyz reported the held lock %v after it was taken", time.Since(locked).Round(time.Millisecond))
	if err := pingFrom(a.name, b.ip); err != nil {
		t.Logf("ping while the policy is not written: %v", err)
	}

	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	h.waitReadyzWithin(30*time.Second, http.StatusOK)
	if pingFrom(a.name, b.ip) == nil {
		t.Errorf("ping %s -> %s passes once the lock is free: the deny policy is not in force", a.name, b.ip)
	}
}
