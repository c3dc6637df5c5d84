package ipam

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/calyx-net/calyx/datastore"
)

// Handles are unambiguous and node-scoped: attachments that differ get
// different handles, the same container ID on two nodes gets two
// addresses, and a DEL on one node never releases the other's.
func TestHandlesUnambiguousAndNodeScoped(t *testing.T) {
	if AttachmentHandle("n1", "abc.x", "eth0") == AttachmentHandle("n1", "abc", "x.eth0") {
		t.Error(`"abc.x"+"eth0" and "abc"+"x.eth0" share a handle`)
	}
	if AttachmentHandle("n1", "a/b", "c") == AttachmentHandle("n1", "a", "b/c") {
		t.Error(`a "/" in a part makes two attachments share a handle`)
	}
	if AttachmentHandle("n1", "abc", "eth0") == AttachmentHandle("n2", "abc", "eth0") {
		t.Error("the same container on two nodes shares a handle")
	}

	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	c.node("n2", nil)
	im := c.ipam()
	alloc := func(node, handle string) string {
		t.Helper()
		got, err := im.Allocate(c.ctx, Request{Handle: handle, Node: node, Attrs: Attributes{Endpoint: "ep-" + node}})
		if err != nil || len(got) != 1 {
			t.Fatalf("Allocate(%s, %s) = %v, %v", node, handle, got, err)
		}
		return got[0].String()
	}
	a1 := alloc("n1", AttachmentHandle("n1", "abc", "eth0"))
	a2 := alloc("n2", AttachmentHandle("n2", "abc", "eth0"))
	if a1 == a2 {
		t.Fatalf("container abc on n1 and n2 both got %s", a1)
	}
	if err := im.ReleaseAttachment(c.ctx, "n1", "abc", "eth0"); err != nil {
		t.Fatal(err)
	}
	_, handles := c.state()
	if handles[AttachmentHandle("n1", "abc", "eth0")] != nil || handles[AttachmentHandle("n2", "abc", "eth0")] == nil {
		t.Fatalf("after n1's DEL: handles %v; want n2's only", keys(handles))
	}

	// A workload added before the upgrade (legacy handle) is released by
	// its node's DEL, and only by its node's.
	alloc("n1", HandleID("old", "eth0"))
	if err := im.ReleaseAttachment(c.ctx, "n2", "old", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, h := c.state(); h[HandleID("old", "eth0")] == nil {
		t.Fatal("n2's DEL released n1's legacy handle")
	}
	if err := im.ReleaseAttachment(c.ctx, "n1", "old", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, h := c.state(); h[HandleID("old", "eth0")] != nil {
		t.Fatal("n1's DEL left its legacy handle")
	}
}

// gc releases nothing while a WorkloadEndpoint or handle record cannot be
// decoded: the unreadable endpoint might be the one holding the address.
func TestGCWaitsWhileRecordsUnreadable(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	im := c.ipam()
	// A leak of a node that is gone: gc would release it at once.
	if _, err := im.Allocate(c.ctx, Request{Handle: "leak", Node: "gone", Attrs: Attributes{Endpoint: "ep-x"}}); err != nil {
		t.Fatal(err)
	}
	// An orphan block entry whose handle record does not decode.
	if _, err := im.Allocate(c.ctx, Request{Handle: "garbled", Node: "gone", Attrs: Attributes{Endpoint: "ep-y"}}); err != nil {
		t.Fatal(err)
	}
	etcd := c.ds.Etcd()
	badEP := datastore.Key(datastore.KindWorkloadEndpoint, "ep-x")
	if _, err := etcd.Put(c.ctx, badEP, "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := etcd.Put(c.ctx, HandleKey("garbled"), "{not json"); err != nil {
		t.Fatal(err)
	}
	rep, err := im.GC(c.ctx, 0)
	if !errors.Is(err, ErrUnreadableRecords) || rep.Waiting == "" || len(rep.Released)+len(rep.FreedOrphans) != 0 {
		t.Fatalf("GC with unreadable records = %+v, %v; want nothing released and ErrUnreadableRecords", rep, err)
	}
	blocks, _ := c.state()
	if used := totalUsed(blocks); used != 2 {
		t.Fatalf("%d addresses allocated after gc, want both kept", used)
	}
	// Once the records are repaired (here: removed), gc does its job.
	if _, err := etcd.Delete(c.ctx, badEP); err != nil {
		t.Fatal(err)
	}
	if _, err := etcd.Delete(c.ctx, HandleKey("garbled")); err != nil {
		t.Fatal(err)
	}
	// (Two runs: the release changes the block the orphan lies in, so the
	// first run leaves the orphan for the next, as gc does with any record
	// that changed under it.)
	for run := 0; run < 2; run++ {
		if _, err := im.GC(c.ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	if blocks, handles := c.state(); totalUsed(blocks) != 0 || len(handles) != 0 {
		t.Fatalf("after the repair gc left %d addresses and handles %v", totalUsed(blocks), keys(handles))
	}
}

// gc never releases an allocation whose workload might still exist: a
// registered node's allocations are its agent's to release, and the agent
// keeps those whose interface is still there.
func TestGCKeepsWhatMightStillExist(t *testing.T) {
	c := newCluster(t)
	c.pool("p", "10.244.0.0/24", 26, "")
	c.node("n1", nil)
	im := c.ipam()
	for _, h := range []string{"running", "gone"} {
		if _, err := im.Allocate(c.ctx, Request{Handle: h, Node: "n1", Attrs: Attributes{Endpoint: "ep-" + h}}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := im.GC(c.ctx, 0)
	if err != nil || len(rep.Released) != 0 || len(rep.Kept) != 2 {
		t.Fatalf("cluster-wide GC = %+v, %v; want both kept (n1 is registered)", rep, err)
	}
	if rep, err := im.GCNode(c.ctx, "n1", 0); err != nil || len(rep.Released) != 0 {
		t.Fatalf("GCNode without the agent's view = %+v, %v; want nothing released", rep, err)
	}
	im.SetInUse("n1", func(h *Handle) bool { return h.ID == "running" })
	rep, err = im.GCNode(c.ctx, "n1", 0)
	if err != nil || len(rep.Released) != 1 || rep.Released[0].Handle != "gone" || len(rep.Kept) != 1 || rep.Kept[0].Handle != "running" {
		t.Fatalf("GCNode with the agent's view = %+v, %v; want gone released, running kept", rep, err)
	}
}

func totalUsed(blocks map[netip.Prefix]*Block) int {
	n := 0
	for _, b := range blocks {
		n += b.Used()
	}
	return n
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
