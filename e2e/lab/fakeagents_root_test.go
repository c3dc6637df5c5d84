package lab

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

// TestLabWithFakeAgents drives everything the lab does with agents (detached
// agents and their readiness, reflector marking, workloads through libcni,
// the ping matrix, TCP from one workload to another, restart, down with
// workloads) using the stand-ins of fakes_test.go.
func TestLabWithFakeAgents(t *testing.T) {
	requireRoot(t)
	l := upTest(t, Options{Hosts: 2, Workloads: 2, Reflectors: 1, BinDir: fakeBinDir(t), StepTimeout: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	procs := l.Processes()

	t.Run("agents", func(t *testing.T) {
		for _, h := range l.Hosts() {
			st, err := l.NodeStatus(ctx, h.Name)
			if err != nil || !st.GetReady() || st.GetNodeName() != h.Name {
				t.Errorf("%s status: %+v %v", h.Name, st, err)
			}
			if log, _ := os.ReadFile(h.AgentLog); !strings.Contains(string(log), "serving on "+h.AgentSocket) {
				t.Errorf("%s agent log %s lacks the agent's output: %q", h.Name, h.AgentLog, log)
			}
		}
		if err := l.WaitEstablished(ctx); err != nil {
			t.Error(err)
		}
		ds, _ := l.Datastore()
		n, err := ds.Get(ctx, datastore.KindNode, "host1")
		if err != nil || n.(*datastore.Node).Spec.RouteReflectorClusterID != ReflectorClusterID {
			t.Errorf("host1 should be marked as a reflector after its agent registered: %+v %v", n, err)
		}
		if h, _ := l.Host("host1"); !h.Reflector {
			t.Error("state: host1 not a reflector")
		}
	})

	t.Run("workloads", func(t *testing.T) {
		ws := l.Workloads()
		if len(ws) != 4 {
			t.Fatalf("workloads = %+v, want 2 per host", ws)
		}
		for _, w := range ws {
			if !w.Wired || w.IP() == "" || w.Labels["app"] == "" {
				t.Errorf("workload %+v: want wired with an IP and an app label", w)
			}
		}
		eps := l.Endpoints(true)
		m := l.PingMatrix(ctx, eps, eps, 8)
		if f := m.Failed(); len(f) > 0 {
			t.Errorf("ping matrix has failures:\n%s", m)
		}
		t.Logf("\n%s", m)
	})

	t.Run("add, tcp, del", func(t *testing.T) {
		w, err := l.AddWorkload(ctx, "extra", "host2", map[string]string{"lab-test": "yes"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.AddWorkload(ctx, "extra", "host1", map[string]string{"lab-test": "yes"}); err == nil {
			t.Error("adding a workload twice succeeded")
		}
		if _, err := l.AddWorkload(ctx, "other", "host9", nil); err == nil || !strings.Contains(err.Error(), "host9") {
			t.Errorf("adding to an unknown host: %v", err)
		}
		if err := l.Ping("h1-w1", w.IP()); err != nil {
			t.Error(err)
		}
		ln, err := l.Listen("extra", ":8080")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hello"))
				c.Close()
			}
		}()
		c, err := l.Dial(ctx, "h1-w2", w.IP()+":8080")
		if err != nil {
			t.Fatalf("tcp from h1-w2 to extra: %v", err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != "hello" {
			t.Errorf("tcp read %q", got)
		}
		if err := l.DelWorkload(ctx, "extra"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(netnsPath(w.Netns)); !os.IsNotExist(err) {
			t.Errorf("workload namespace still there: %v", err)
		}
		if out, _ := l.Exec("host2", "ip", "-o", "link"); strings.Contains(out, hostVeth(w.ContainerID)) {
			t.Errorf("CNI DEL did not reach the agent: host veth still there:\n%s", out)
		}
		if err := l.Ping("h1-w1", w.IP()); err == nil {
			t.Error("a deleted workload still answers")
		}
	})

	t.Run("restart keeps the dataplane", func(t *testing.T) {
		before := l.Processes()
		if err := l.RestartAgent(ctx, "host1"); err != nil {
			t.Fatal(err)
		}
		if err := l.KillAgent("host2"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.NodeStatus(ctx, "host2"); err == nil {
			t.Error("a killed agent answers")
		}
		if err := l.StartAgent(ctx, "host2"); err != nil {
			t.Fatal(err)
		}
		after := l.Processes()
		for _, name := range []string{"agent-host1", "agent-host2"} {
			b, _ := (&State{Processes: before}).proc(name)
			a, _ := (&State{Processes: after}).proc(name)
			if a == nil || b == nil || a.PID == b.PID || !a.alive() || b.alive() {
				t.Errorf("%s: before %+v after %+v: want a new live process", name, b, a)
			}
		}
		procs = append(procs, after...)
		w, _ := l.Workload("h2-w1")
		if err := l.Ping("h1-w1", w.IP()); err != nil {
			t.Error(err)
		}
	})

	if err := l.Teardown(); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, l.Prefix(), procs)
}
