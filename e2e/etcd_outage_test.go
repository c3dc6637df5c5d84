package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestEtcdOutage: etcd goes away for a while. Traffic between running
// workloads keeps flowing (the dataplane does not depend on etcd), a CNI
// ADD fails cleanly with "try again later" and leaves nothing, a DEL of a
// running workload unwires it and reports the failure so that the runtime
// retries, and once etcd is back the retry releases the address and new
// workloads work again: nothing leaks.
func TestEtcdOutage(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 2, Workloads: 1})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w1, _ := l.Workload("h1-w1")
	w2, _ := l.Workload("h2-w1")
	doomed, err := l.AddWorkload(ctx, "doomed", "host2", nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "h1-w1 reaches h2-w1", func() error { return l.Ping(w1.Name, w2.IP()) })

	ping12 := startPinger(ctx, t, l, w1.Name, w2.IP())
	ping21 := startPinger(ctx, t, l, w2.Name, w1.IP())
	time.Sleep(500 * time.Millisecond)

	if err := l.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	t.Log("etcd stopped")
	// The agents say so: not ready (CNI STATUS and /readyz follow the same
	// condition), while the dataplane keeps working.
	testutil.Eventually(t, 20*time.Second, "host1 reports the datastore unreachable", func() error {
		st, err := l.NodeStatus(ctx, "host1")
		if err != nil {
			return err
		}
		if st.GetReady() {
			return fmt.Errorf("host1 still reports ready")
		}
		return nil
	})

	// ADD during the outage: refused, and nothing of it is left on host1.
	before, _ := l.Exec("host1", "ip", "-o", "link", "show")
	addCtx, addCancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = l.AddWorkload(addCtx, "during-outage", "host1", nil)
	addCancel()
	if err == nil {
		t.Fatal("CNI ADD succeeded with etcd down")
	}
	t.Logf("ADD during the outage: %v", err)
	if !strings.Contains(err.Error(), "11") && !strings.Contains(strings.ToLower(err.Error()), "try again") {
		t.Errorf("ADD during the outage should be 'try again later' (code 11): %v", err)
	}
	after, _ := l.Exec("host1", "ip", "-o", "link", "show")
	if strings.Count(after, "cx") != strings.Count(before, "cx") {
		t.Errorf("the failed ADD left an interface on host1:\nbefore %s\nafter %s", before, after)
	}

	// DEL during the outage: the workload is unwired; the address cannot
	// be released yet, so DEL reports an error and the runtime retries.
	delCtx, delCancel := context.WithTimeout(ctx, 30*time.Second)
	delErr := l.DelWorkload(delCtx, doomed.Name)
	delCancel()
	t.Logf("DEL during the outage: %v", delErr)

	time.Sleep(3 * time.Second) // a few seconds of outage under traffic
	if err := l.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("etcd back")
	testutil.Eventually(t, 30*time.Second, "host1 ready again", func() error {
		st, err := l.NodeStatus(ctx, "host1")
		if err != nil {
			return err
		}
		if !st.GetReady() {
			return fmt.Errorf("host1 not ready yet")
		}
		return nil
	})

	// The DEL retry (if the first failed) now releases the address.
	if delErr != nil {
		testutil.Eventually(t, 30*time.Second, "DEL retried after the outage", func() error { return l.DelWorkload(ctx, doomed.Name) })
	}
	testutil.Eventually(t, 30*time.Second, "ADD works again", func() error {
		_, err := l.AddWorkload(ctx, "after-outage", "host1", nil)
		return err
	})
	testutil.Eventually(t, 10*time.Second, "new workload reachable from host2", func() error {
		w, _ := l.Workload("after-outage")
		return l.Ping(w2.Name, w.IP())
	})

	for _, p := range []*pinger{ping12, ping21} {
		st := p.stop()
		t.Logf("ping %s -> %s over the outage: %s", p.from, p.to, st)
		if st.replies == 0 || len(st.lost) > 0 {
			t.Errorf("traffic %s -> %s was disturbed by the etcd outage: %s", p.from, p.to, st)
		}
	}

	// Nothing leaked: IPAM holds exactly the live workloads' addresses.
	out, stderr, code := calyxctl(ctx, t, l, "host1", "ipam", "check")
	if code != 0 {
		t.Errorf("ipam check after the outage: %s %s", out, stderr)
	}
	if blocks := blocks(ctx, t, l); len(blocks) == 0 {
		t.Error("no IPAM blocks listed")
	} else {
		used := 0
		for _, b := range blocks {
			used += b.Used
		}
		if want := len(l.Workloads()); used != want {
			t.Errorf("IPAM holds %d addresses for %d workloads", used, want)
		}
	}
}
