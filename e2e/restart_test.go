package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/internal/testutil"
)

// TestAgentRestartKeepsTraffic: traffic between workloads on two hosts
// flows on while an agent restarts, and while it is dead after a crash
// (the dataplane stays, peers keep its routes by graceful restart); the
// restarted agent serves CNI ADD again and its sessions come back.
func TestAgentRestartKeepsTraffic(t *testing.T) {
	l := upLab(t, lab.Options{Hosts: 2, Workloads: 1, Peer: lab.PeerBird})
	waitEstablished(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, _ := l.Workload("h2-w1")
	dst, _ := l.Workload("h1-w1")
	testutil.Eventually(t, 10*time.Second, "h2-w1 reaches h1-w1", func() error { return l.Ping(src.Name, dst.IP()) })

	// Ping every 100 ms while the agent of host1 goes away and back.
	var sent, lost atomic.Int64
	var phase atomic.Value
	phase.Store("restart")
	var lostIn sync.Map // phase -> count, to tell the agent's authors when
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			sent.Add(1)
			if l.Ping(src.Name, dst.IP()) != nil {
				lost.Add(1)
				n, _ := lostIn.LoadOrStore(phase.Load(), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		}
	}()

	if err := l.RestartAgent(ctx, "host1"); err != nil {
		t.Fatal(err)
	}
	phase.Store("kill")
	if err := l.KillAgent("host1"); err != nil {
		t.Fatal(err)
	}
	phase.Store("dead")
	time.Sleep(3 * time.Second) // dead for a while, as after a crash
	phase.Store("start after the crash")
	if err := l.StartAgent(ctx, "host1"); err != nil {
		t.Fatal(err)
	}
	phase.Store("sessions coming back")
	waitEstablished(t, l)
	close(stop)
	<-done
	t.Logf("pings during restart, crash and start: %d sent, %d lost", sent.Load(), lost.Load())
	if lost.Load() > 0 {
		var where []string
		lostIn.Range(func(k, v any) bool {
			where = append(where, fmt.Sprintf("%d during %s", v.(*atomic.Int64).Load(), k))
			return true
		})
		t.Errorf("%d of %d pings lost (%s): the dataplane should stay as it is while the agent is away", lost.Load(), sent.Load(), strings.Join(where, ", "))
	}

	w, err := l.AddWorkload(ctx, "after-restart", "host1", map[string]string{"app": "late"})
	if err != nil {
		t.Fatalf("ADD after the restart: %v", err)
	}
	testutil.Eventually(t, 15*time.Second, "h2-w1 reaches the workload added after the restart", func() error { return l.Ping(src.Name, w.IP()) })
}
