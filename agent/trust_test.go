package agent_test

// Hostile CNI input fails safe (issue 12): reserved labels, the host's
// own namespace, an interface name already taken, a DEL of a veth that is
// not ours, the same container ID on two nodes. Each refusal is checked to
// create nothing: no link, no endpoint, no address, no etcd write at all.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
)

// etcdRevision is the datastore's current revision: a refused ADD must
// not move it.
func (h *host) etcdRevision() int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := h.etcdClient().Get(ctx, "/calyx-revision-probe")
	if err != nil {
		h.t.Fatalf("reading the etcd revision: %v", err)
	}
	return resp.Header.Revision
}

// refusedCleanly asserts that a refused ADD of w left nothing behind and
// wrote nothing to etcd since revision before.
func (h *host) refusedCleanly(w *workload, before int64) {
	h.t.Helper()
	if left := h.leftovers(w); len(left) > 0 {
		h.t.Errorf("refused ADD left behind: %s", strings.Join(left, "; "))
	}
	if l := h.hostLinks(); len(l) > 0 {
		h.t.Errorf("refused ADD left host links %v", l)
	}
	if after := h.etcdRevision(); after != before {
		h.t.Errorf("refused ADD wrote to etcd (revision %d -> %d)", before, after)
	}
}

func TestAddRefusesReservedLabels(t *testing.T) {
	h := newHost(t, hostOptions{})
	labelConf := func(labels string) []byte {
		return fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"calyx","type":"calyx","agentSocket":%q,"runtimeConfig":{"labels":%s}}`, h.socket, labels)
	}
	for _, tc := range []struct {
		name   string
		conf   []byte
		args   string
		code   uint
		substr string
	}{
		{"service account label", labelConf(`{"app":"web","calyx.dev/serviceaccount":"admin"}`), "", 7, `"calyx.dev/serviceaccount" is reserved`},
		{"namespace label", labelConf(`{"calyx.dev/namespace":"kube-system"}`), "", 7, "reserved"},
		{"subdomain of calyx.dev", labelConf(`{"x.calyx.dev/role":"db"}`), "", 7, "reserved"},
		{"profile namespace label", labelConf(`{"pcns.team":"ops"}`), "", 7, "reserved"},
		{"CNI_ARGS key", nil, "K8S_POD_NAMESPACE=shop;calyx.dev/namespace=kube-system", 4, "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			w := h.newWorkload("r")
			before := h.etcdRevision()
			var env []string
			if tc.args != "" {
				env = append(env, "CNI_ARGS="+tc.args)
			}
			expectCNIError(t, h.cni("ADD", w, tc.conf, env...), tc.code, tc.substr)
			h.refusedCleanly(w, before)
		})
	}
	// Labels of one's own still work beside the automatic ones.
	w := h.newWorkload("ok")
	o := h.cni("ADD", w, labelConf(`{"app":"web"}`))
	if o.err != nil {
		t.Fatal(o.err)
	}
	if wep := h.getEndpoint(w); wep.Metadata.Labels["app"] != "web" || wep.Metadata.Labels[datastore.LabelNode] != nodeName {
		t.Errorf("endpoint labels %v, want app=web and %s=%s", wep.Metadata.Labels, datastore.LabelNode, nodeName)
	}
}

// A pod name too long for a label value gets a hashed value: a label that
// is there, valid, and distinct from another long name's.
func TestLongPodNameGetsHashedLabel(t *testing.T) {
	h := newHost(t, hostOptions{})
	long := strings.Repeat("web-frontend-", 6) // 78 characters
	var values []string
	for i, pod := range []string{long + "a", long + "b"} {
		w := h.newWorkload(fmt.Sprint(i))
		o := h.cni("ADD", w, nil, "CNI_ARGS=K8S_POD_NAMESPACE=shop;K8S_POD_NAME="+pod)
		if o.err != nil {
			t.Fatal(o.err)
		}
		wep := h.getEndpoint(w)
		v, ok := wep.Metadata.Labels[datastore.LabelPod]
		if !ok {
			t.Fatalf("pod %s (%d characters): endpoint has no %s label: %v", pod, len(pod), datastore.LabelPod, wep.Metadata.Labels)
		}
		if err := datastore.ValidateLabel(datastore.LabelPod, v); err != nil {
			t.Errorf("hashed value: %v", err)
		}
		if v != datastore.LabelValue(pod) || !strings.HasPrefix(v, "web-frontend-") {
			t.Errorf("%s = %q, want LabelValue(%q) = %q", datastore.LabelPod, v, pod, datastore.LabelValue(pod))
		}
		if wep.Spec.Workload != "shop/"+pod {
			t.Errorf("workload %q, want the full name shop/%s", wep.Spec.Workload, pod)
		}
		values = append(values, v)
	}
	if values[0] == values[1] {
		t.Errorf("two long pod names share the label value %q", values[0])
	}
}

// CNI_NETNS must be a workload's network namespace: not the agent's own,
// not the host's, not a plain file.
func TestAddRefusesHostNetns(t *testing.T) {
	h := newHost(t, hostOptions{})
	plain := filepath.Join(h.dir, "not-a-netns")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, netns, ifName, substr string }{
		{"the agent's own namespace", h.nsPath(), "eth0", "calyx-agent's own network namespace"},
		{"the host's namespace", "/proc/1/ns/net", "cxtrust0", ""},
		{"a plain file", plain, "eth0", "is not a namespace file"},
		{"another kind of namespace", "/proc/self/ns/uts", "eth0", "not a network namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			w := h.workloadNamed("n", randomHex(64), tc.ifName)
			before := h.etcdRevision()
			hostLinks := linkNames(t, h.nsPath())
			o := h.cni("ADD", w, nil, "CNI_NETNS="+tc.netns)
			expectCNIError(t, o, 8, tc.substr)
			if after := linkNames(t, h.nsPath()); !slices.Equal(after, hostLinks) {
				t.Errorf("the agent's namespace links changed: %v -> %v", hostLinks, after)
			}
			h.refusedCleanly(w, before)
		})
	}
}

// A CNI_IFNAME that exists in the workload's namespace is never taken
// over: refused before anything is allocated, and the interface stays.
func TestAddRefusesTakenIfName(t *testing.T) {
	h := newHost(t, hostOptions{})
	for _, tc := range []struct{ name, kind, substr string }{
		{"bridge", "bridge", "as a bridge interface"},
		{"foreign veth", "veth", "a veth this agent did not make"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			w := h.newWorkload("i")
			if tc.kind == "veth" {
				run(t, "ip", "-n", w.name, "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
				w.sharedWith = []string{"eth0", "other0"}
			} else {
				run(t, "ip", "-n", w.name, "link", "add", "eth0", "type", tc.kind)
				w.sharedWith = []string{"eth0"}
			}
			before := h.etcdRevision()
			expectCNIError(t, h.cni("ADD", w, nil), 4, tc.substr)
			if names := linkNames(t, w.nsPath()); !slices.Contains(names, "eth0") {
				t.Errorf("the workload's own eth0 is gone: %v", names)
			}
			h.refusedCleanly(w, before)
		})
	}
}

// DEL removes only a veth whose peer is one of ours: a veth named like the
// attachment's interface but paired elsewhere survives, and DEL succeeds.
func TestDelLeavesForeignVeth(t *testing.T) {
	h := newHost(t, hostOptions{})
	for _, tc := range []struct{ name, peerNS string }{
		{"peer in the same namespace", ""},
		{"peer in the host namespace, not ours", h.ns},
		{"peer in a third namespace", "third"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.in(t)
			w := h.newWorkload("d")
			argv := []string{"ip", "-n", w.name, "link", "add", "eth0", "type", "veth", "peer", "name", "fx0"}
			switch tc.peerNS {
			case "":
				w.sharedWith = []string{"eth0", "fx0"}
			case "third":
				third := h.newWorkload("t")
				argv = append(argv, "netns", third.name)
				w.sharedWith = []string{"eth0"}
			default:
				argv = append(argv, "netns", tc.peerNS)
				w.sharedWith = []string{"eth0"}
				t.Cleanup(func() { runErr("ip", "-n", h.ns, "link", "del", "fx0") })
			}
			run(t, argv...)
			if o := h.cni("DEL", w, nil); o.err != nil {
				t.Fatalf("DEL: %v", o.err)
			}
			if names := linkNames(t, w.nsPath()); !slices.Contains(names, "eth0") {
				t.Errorf("DEL deleted a veth that is not Calyx's: links now %v", names)
			}
		})
	}
	// Our own veth is still removed, also when its host end was renamed.
	w := h.newWorkload("own")
	h.add(w)
	run(t, "ip", "-n", h.ns, "link", "set", w.hostIf, "down")
	run(t, "ip", "-n", h.ns, "link", "set", w.hostIf, "name", "renamed0")
	if o := h.cni("DEL", w, nil); o.err != nil {
		t.Fatalf("DEL: %v", o.err)
	}
	if names := linkNames(t, w.nsPath()); slices.Contains(names, "eth0") {
		t.Errorf("DEL left our own veth (host end renamed) in the workload: %v", names)
	}
}

// The same container ID on two nodes gets two addresses, and a DEL on this
// node never releases the other's, also for a workload the other node
// added before handles were node-scoped (legacy handle container.ifname).
func TestSameContainerIDOnTwoNodes(t *testing.T) {
	h := newHost(t, hostOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	im := ipam.New(datastore.NewClientFromEtcd(h.etcdClient()), slog.New(slog.DiscardHandler))
	w := h.newWorkload("c")
	theirs, err := im.Allocate(ctx, ipam.Request{Handle: ipam.HandleID(w.containerID, w.ifName), Node: "h2",
		Attrs: ipam.Attributes{Endpoint: "h2-other"}})
	if err != nil || len(theirs) != 1 {
		t.Fatalf("h2's allocation: %v %v", theirs, err)
	}
	h.add(w)
	if w.ip == theirs[0].Addr() {
		t.Fatalf("container %s got h2's address %s on h1", w.containerID[:12], w.ip)
	}
	if o := h.cni("DEL", w, nil); o.err != nil {
		t.Fatal(o.err)
	}
	h.waitNoLeftovers(&workload{name: w.name, containerID: w.containerID, ifName: w.ifName, endpoint: w.endpoint, hostIf: w.hostIf, handle: w.handle}, 5*time.Second)
	// The block still has the address, and the legacy handle record (which
	// says who holds it: blocks name no handle) still lists it.
	info, err := im.LookupIP(ctx, theirs[0].Addr())
	if err != nil {
		t.Fatal(err)
	}
	if held := info.Allocated && info.HandleListsIt && info.Allocation.Handle == ipam.HandleID(w.containerID, w.ifName); !held {
		t.Errorf("h1's DEL released h2's address %s (legacy handle %s)", theirs[0], ipam.HandleID(w.containerID, w.ifName)[:12])
	}
}

// CNI GC acts only on attachments of its own network: a runtime
// collecting network "other" with no valid attachments removes other's,
// never calyx's.
func TestGCOnlyTouchesItsNetwork(t *testing.T) {
	h := newHost(t, hostOptions{})
	mine, theirs := h.newWorkload("mine"), h.newWorkload("theirs")
	h.add(mine)
	otherConf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"other","type":"calyx","agentSocket":%q}`, h.socket)
	o := h.cni("ADD", theirs, otherConf)
	if o.err != nil {
		t.Fatal(o.err)
	}
	theirs.ip = resultIP(t, []byte(o.stdout))
	if wep := h.getEndpoint(mine); wep.Spec.Network != "calyx" {
		t.Errorf("endpoint records network %q, want calyx", wep.Spec.Network)
	}
	gcConf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"other","type":"calyx","agentSocket":%q,"cni.dev/valid-attachments":[]}`, h.socket)
	if o := h.cni("GC", nil, gcConf); o.err != nil {
		t.Fatalf("GC: %v", o.err)
	}
	h.waitNoLeftovers(theirs, 5*time.Second)
	checkWired(t, h, mine)
	if h.getEndpoint(mine) == nil {
		t.Fatalf("GC of network other removed calyx's endpoint %s", mine.endpoint)
	}
	if err := pingFrom(h.ns, mine.ip); err != nil {
		t.Errorf("calyx's attachment after other's GC: %v", err)
	}
}

// A Node of this name registered with another address is not taken over
// (two hosts with one name must not share an identity) unless the agent
// is started with --takeover-node.
func TestNodeNameTakenByAnotherAddress(t *testing.T) {
	h := newHost(t, hostOptions{noPool: true})
	out, err := h.calyxctl("", "get", "node", nodeName, "-o", "yaml")
	if err != nil {
		t.Fatalf("get node: %v\n%s", err, out)
	}
	other := strings.Replace(out, nodeIP, "198.18.0.9", 1)
	if other == out {
		t.Fatalf("Node %s does not show address %s:\n%s", nodeName, nodeIP, out)
	}
	if out, err := h.calyxctl(other, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply node: %v\n%s", err, out)
	}
	h.stopAgent(syscall.SIGTERM)

	// The embedded etcd lives in the agent: the refused start must still
	// have served it, and must exit with the reason.
	h.startAgent()
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent started although Node h1 has another address")
	}
	h.stopAgent(syscall.SIGTERM)
	logText, _ := os.ReadFile(filepath.Join(h.dir, "agent.log"))
	if !strings.Contains(string(logText), "198.18.0.9") || !strings.Contains(string(logText), "--takeover-node") {
		t.Errorf("the refusal does not name the other address and --takeover-node; log:\n%s", logText)
	}

	h.agentEnv = append(h.agentEnv, "CALYX_TAKEOVER_NODE=true")
	h.startAgent()
	h.waitInSync()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := h.calyxctl("", "get", "node", nodeName, "-o", "yaml")
		if err == nil && strings.Contains(out, nodeIP) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with --takeover-node the Node did not get this host's address: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
