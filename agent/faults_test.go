package agent_test

// The failure paths of the CNI verbs against the real agent: each failing
// call must say why and leave nothing behind, and no call may harm another
// workload.

import (
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFaults: every failing ADD says why and leaves nothing behind.
func TestFaults(t *testing.T) {
	h := newHost(t, hostOptions{})

	t.Run("netns missing", func(t *testing.T) {
		h := h.in(t)
		w := h.workloadNamed("gone", randomHex(64), "eth0")
		o := h.cni("ADD", w, nil)
		expectCNIError(t, o, 4, w.nsPath())
		h.waitNoLeftovers(w, 2*time.Second)
		if o := h.cni("DEL", w, nil); o.err != nil {
			t.Errorf("DEL after the failed ADD: %v", o.err)
		}
	})

	t.Run("ifname too long", func(t *testing.T) {
		h := h.in(t)
		w := h.newWorkloadWith("long", randomHex(64), "eth0123456789abc") // 16 characters
		o := h.cni("ADD", w, nil)
		expectCNIError(t, o, 4, "interface name")
		h.waitNoLeftovers(w, 2*time.Second)
		if o := h.cni("DEL", w, nil); o.err != nil && (o.cniErr == nil || o.cniErr.Code != 4) {
			t.Errorf("DEL with the same bad ifname: want success or code 4, got %v", o.err)
		}
	})

	t.Run("DEL without netns", func(t *testing.T) {
		h := h.in(t)
		// The spec lets a runtime send DEL with CNI_NETNS empty.
		w := h.newWorkload("nons")
		h.add(w)
		o := h.cni("DEL", w, nil, "CNI_NETNS=")
		if o.err != nil {
			t.Fatalf("DEL with CNI_NETNS empty: %v", o.err)
		}
		h.waitNoLeftovers(w, 5*time.Second)
	})

	t.Run("DEL after the netns is gone", func(t *testing.T) {
		h := h.in(t)
		w := h.newWorkload("nsgone")
		h.add(w)
		run(t, "ip", "netns", "del", w.name)
		if o := h.cni("DEL", w, nil); o.err != nil {
			t.Fatalf("DEL with the workload namespace gone: %v", o.err)
		}
		h.waitNoLeftovers(w, 5*time.Second)
	})

	t.Run("duplicate ADD", func(t *testing.T) {
		h := h.in(t)
		w := h.newWorkload("dup")
		h.add(w)
		first := w.ip
		h.add(w)
		if w.ip != first {
			t.Errorf("second ADD of the same container and ifname gave %s, the first %s", w.ip, first)
		}
		if links := linkNames(t, w.nsPath()); len(links) != 2 {
			t.Errorf("workload links after two ADDs: %v, want lo and eth0", links)
		}
		n := 0
		for _, l := range h.hostLinks() {
			if l == w.hostIf {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d host veths %s after two ADDs", n, w.hostIf)
		}
		if held := h.ipamHolds(w); len(held) != 2 {
			t.Errorf("IPAM after two ADDs: want one handle and one allocation, got %v", held)
		}
		if err := pingFrom(h.ns, w.ip); err != nil {
			t.Error(err)
		}
		if o := h.cni("DEL", w, nil); o.err != nil {
			t.Fatal(o.err)
		}
		h.waitNoLeftovers(w, 5*time.Second)
	})

	t.Run("repeated ADD rebuilds a broken workload", func(t *testing.T) {
		h := h.in(t)
		w := h.newWorkload("rebuild")
		h.add(w)
		first := w.ip
		run(t, "ip", "-n", w.name, "route", "del", "default")
		if o := h.cni("CHECK", w, h.checkConf(w.result)); o.err == nil {
			t.Errorf("CHECK succeeded with the workload's default route gone")
		}
		h.add(w)
		if w.ip != first {
			t.Errorf("the rebuilding ADD gave %s, the first %s", w.ip, first)
		}
		checkWired(t, h, w)
		if err := pingFrom(w.name, netip.MustParseAddr(nodeIP)); err != nil {
			t.Errorf("rebuilt workload to host: %v", err)
		}
		if held := h.ipamHolds(w); len(held) != 2 {
			t.Errorf("IPAM after the rebuild: want one handle and one allocation, got %v", held)
		}
		if o := h.cni("DEL", w, nil); o.err != nil {
			t.Fatal(o.err)
		}
		h.waitNoLeftovers(w, 5*time.Second)
	})

	t.Run("concurrent duplicate ADDs", func(t *testing.T) {
		h := h.in(t)
		// A runtime that times out retries ADD while the first is still
		// running: however the calls interleave, the survivor must be
		// wired and hold its address.
		w := h.newWorkload("cdup")
		outs := parallel(4, 4, func(int) cniOutcome { return h.cni("ADD", w, nil) })
		var ips []netip.Addr
		for _, o := range outs {
			if o.err != nil {
				t.Logf("one of the concurrent ADDs failed: %v", o.err)
				continue
			}
			ips = append(ips, resultIP(t, []byte(o.stdout)))
		}
		if len(ips) == 0 {
			t.Fatal("every concurrent ADD of one attachment failed")
		}
		for _, ip := range ips[1:] {
			if ip != ips[0] {
				t.Errorf("concurrent ADDs of one attachment returned %v", ips)
			}
		}
		w.ip = ips[0]
		checkWired(t, h, w)
		if err := pingFrom(h.ns, w.ip); err != nil {
			t.Error(err)
		}
		if held := h.ipamHolds(w); len(held) != 2 {
			t.Errorf("IPAM after concurrent ADDs: want one handle and one allocation, got %v", held)
		}
		if wep := h.getEndpoint(w); wep == nil {
			t.Errorf("no WorkloadEndpoint after concurrent ADDs")
		}
		if o := h.cni("DEL", w, nil); o.err != nil {
			t.Fatal(o.err)
		}
		h.waitNoLeftovers(w, 5*time.Second)
	})

	t.Run("second interface of one container", func(t *testing.T) {
		h := h.in(t)
		w := h.newWorkload("two")
		w.sharedWith = []string{"eth1"}
		w2 := h.workloadNamed("two", w.containerID, "eth1")
		w2.sharedWith = []string{"eth0"}
		h.add(w)
		// eth1 gets its own address and veth; the default route stays on
		// eth0, and both addresses answer the host.
		o := h.cni("ADD", w2, nil)
		if o.err != nil {
			t.Fatalf("ADD of a second interface failed: %v", o.err)
		}
		w2.ip = resultIP(t, []byte(o.stdout))
		w2.result = []byte(o.stdout)
		if w.ip == w2.ip || w.hostIf == w2.hostIf {
			t.Errorf("eth0 and eth1 of one container share address or veth: %s/%s %s/%s", w.ip, w.hostIf, w2.ip, w2.hostIf)
		}
		checkWired(t, h, w)
		if o := h.cni("CHECK", w2, h.checkConf(w2.result)); o.err != nil {
			t.Errorf("CHECK of eth1: %v", o.err)
		}
		for _, x := range []*workload{w, w2} {
			if err := pingFrom(h.ns, x.ip); err != nil {
				t.Errorf("%s after the ADD of eth1: %v", x.ifName, err)
			}
		}
		for _, x := range []*workload{w2, w} {
			if o := h.cni("DEL", x, nil); o.err != nil {
				t.Fatal(o.err)
			}
		}
		h.waitNoLeftovers(w, 5*time.Second)
		h.waitNoLeftovers(w2, 5*time.Second)
	})

	t.Run("containers sharing an ID prefix", func(t *testing.T) {
		h := h.in(t)
		// Runtimes choose container IDs; two that share their first 12
		// characters are still two workloads. The second must either work
		// or fail cleanly, and its DEL (which the runtime sends after a
		// failed ADD) must not touch the first.
		a := h.newWorkloadWith("pfxa", "sharedprefix-a", "eth0")
		b := h.newWorkloadWith("pfxb", "sharedprefix-b", "eth0")
		h.add(a)
		if o := h.cni("ADD", b, nil); o.err != nil {
			t.Logf("ADD of the second container failed: %v", o.err)
			if held := h.ipamHolds(b); len(held) > 0 {
				t.Errorf("the failed ADD left IPAM state: %v", held)
			}
		} else {
			b.ip = resultIP(t, []byte(o.stdout))
			if a.ip == b.ip || a.hostIf == b.hostIf {
				t.Errorf("two containers share address or veth: %s/%s %s/%s", a.ip, a.hostIf, b.ip, b.hostIf)
			}
			if err := pingFrom(h.ns, b.ip); err != nil {
				t.Errorf("second container: %v", err)
			}
		}
		if o := h.cni("DEL", b, nil); o.err != nil {
			t.Errorf("DEL of the second container: %v", o.err)
		}
		checkWired(t, h, a)
		if err := pingFrom(h.ns, a.ip); err != nil {
			t.Errorf("first container after the second's ADD and DEL: %v", err)
		}
		if wep := h.getEndpoint(a); wep == nil || wep.Spec.ContainerID != a.containerID {
			t.Errorf("first container's WorkloadEndpoint after the second's DEL: %+v", wep)
		}
		if held := h.ipamHolds(a); len(held) != 2 {
			t.Errorf("first container's IPAM state after the second's DEL: %v", held)
		}
		if o := h.cni("DEL", a, nil); o.err != nil {
			t.Error(o.err)
		}
		h.waitNoLeftovers(a, 5*time.Second)
	})

	// ipam-commit and endpoint-write fail an etcd write while the veth
	// is made or configured beside it: the kernel side is undone too.
	for _, f := range []struct {
		step string
		code uint
		msg  string
	}{
		{"ipam-commit", 102, "injected failure of ipam-commit"},
		{"ipam-allocated", 101, "injected fault after ipam-allocated"},
		{"veth-created", 101, "injected fault after veth-created"},
		{"endpoint-write", 102, "injected failure of endpoint-write"},
		{"veth-configured", 101, "injected fault after veth-configured"},
		{"dataplane-programmed", 101, "injected fault after dataplane-programmed"},
	} {
		step := f.step
		t.Run("fault after "+step, func(t *testing.T) {
			fh := newHost(t, hostOptions{hooks: []string{"--test-fault-after", step}})
			w := fh.newWorkload("f")
			o := fh.cni("ADD", w, nil)
			expectCNIError(t, o, f.code, f.msg)
			fh.waitNoLeftovers(w, 5*time.Second)
			if err := fh.nothingLeft([]*workload{w}); err != nil {
				t.Error(err)
			}
			if o := fh.cni("DEL", w, nil); o.err != nil {
				t.Errorf("DEL after the failed ADD: %v", o.err)
			}
		})
	}

	t.Run("agent down", func(t *testing.T) {
		h := h.in(t)
		w := h.newWorkload("down")
		if code := h.stopAgent(syscall.SIGTERM); code != 0 {
			t.Errorf("calyx-agent exit status after SIGTERM: %d, want 0", code)
		}
		o := h.cni("ADD", w, nil)
		expectCNIError(t, o, 11, "not reachable")
		if names := linkNames(t, w.nsPath()); !slices.Equal(names, []string{"lo"}) {
			t.Errorf("workload namespace links after ADD with the agent down: %v", names)
		}
		o = h.cni("STATUS", nil, nil)
		expectCNIError(t, o, 50, "")
		o = h.cni("DEL", w, nil)
		expectCNIError(t, o, 11, "not reachable")
		h.startAgent()
		h.waitInSync()
		h.waitNoLeftovers(w, 2*time.Second)
		h.waitStatusReady()
	})
}

// expectCNIError asserts that the binary failed with CNI code and a
// message (or details) containing substr.
func expectCNIError(t *testing.T, o cniOutcome, code uint, substr string) {
	t.Helper()
	if o.err == nil {
		t.Fatalf("want CNI error %d, got success: %s", code, o.stdout)
	}
	if o.cniErr == nil {
		t.Fatalf("want CNI error %d as JSON on stdout, got %v", code, o.err)
	}
	if o.cniErr.Code != code {
		t.Fatalf("CNI error code %d, want %d: %v", o.cniErr.Code, code, o.err)
	}
	if !strings.Contains(o.cniErr.Msg+" "+o.cniErr.Details, substr) {
		t.Errorf("CNI error %q / %q does not mention %q", o.cniErr.Msg, o.cniErr.Details, substr)
	}
	t.Logf("CNI error %d: %s", o.cniErr.Code, o.cniErr.Msg)
}
