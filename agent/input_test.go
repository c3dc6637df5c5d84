package agent_test

// Bad policy input fails safe (issue 12): a policy overwritten in etcd with
// bytes that do not decode, or with one the policy dataplane cannot
// compile, leaves the rules in force as they were and makes /readyz fail,
// naming the resource and the reason, until it is fixed or deleted.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
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
	testutil.Eventually(h.t, 15*time.Second, fmt.Sprintf("/readyz %d %q", code, want), func() error {
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
