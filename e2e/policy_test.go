package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

const allowFrontendPolicy = `apiVersion: calyx.dev/v1
kind: Policy
metadata:
  name: web-from-frontend
spec:
  selector: app == "web"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: tcp
    source:
      selector: role == "frontend"
    destination:
      ports: [8080]
`

// TestPolicyAllowsOnlyTheSelectedClient: with no policy every client
// reaches the server; once a policy selects the server, only what it allows
// gets through (from another host and from the same host); without the
// policy everything flows again.
func TestPolicyAllowsOnlyTheSelectedClient(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 2})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	add := func(name, host string, labels map[string]string) lab.Workload {
		w, err := l.AddWorkload(ctx, name, host, labels)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	server := add("web", "host2", map[string]string{"app": "web"})
	add("frontend", "host1", map[string]string{"role": "frontend"})
	add("other", "host1", map[string]string{"role": "other"})
	add("neighbour", "host2", map[string]string{"role": "other"})

	ln, err := l.Listen("web", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lab.DiscardConns(ln)
	target := net.JoinHostPort(server.IP(), "8080")
	connect := func(from string) error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := l.Dial(cctx, from, target)
		if err != nil {
			return err
		}
		return c.Close()
	}
	blocked := func(from string) func() error {
		return func() error {
			if connect(from) == nil {
				return fmt.Errorf("%s still connects to %s", from, target)
			}
			return nil
		}
	}

	for _, c := range []string{"frontend", "other", "neighbour"} {
		testutil.Eventually(t, 10*time.Second, c+" connects before any policy", func() error { return connect(c) })
	}
	if err := l.Apply(ctx, []byte(allowFrontendPolicy)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "other is blocked by the policy", blocked("other"))
	testutil.Eventually(t, 5*time.Second, "neighbour (same host) is blocked by the policy", blocked("neighbour"))
	if err := connect("frontend"); err != nil {
		t.Errorf("frontend is allowed by the policy but: %v", err)
	}
	if err := l.Ping("frontend", server.IP()); err == nil {
		t.Error("ICMP is not allowed by the policy, yet ping answers")
	}

	ds, err := l.Datastore()
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Delete(ctx, datastore.KindPolicy, "web-from-frontend"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "other connects once the policy is gone", func() error {
		if err := connect("other"); err != nil {
			return errors.Join(errors.New("still blocked"), err)
		}
		return nil
	})
}
