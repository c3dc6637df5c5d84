package netns_test

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"

	"github.com/calyx-net/calyx/internal/netnstest"
	"github.com/calyx-net/calyx/routes/netns"
)

func TestDoEntersAndReturns(t *testing.T) {
	ns := netnstest.New(t, "nsdo")
	ns.MustRun(t, "ip", "link", "add", "nsdo0", "type", "veth", "peer", "name", "nsdo1")
	before, err := vns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	var inside []string
	err = netns.Do(ns.Path, func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			inside = append(inside, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if len(inside) != 3 {
		t.Fatalf("interfaces seen inside = %v, want lo, nsdo0, nsdo1", inside)
	}
	after, err := vns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Fatalf("thread left in another namespace after Do")
	}

	var n int
	err = netns.DoHandle(ns.Path, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		n = len(links)
		return err
	})
	if err != nil || n != 3 {
		t.Fatalf("DoHandle saw %d links (err %v), want 3", n, err)
	}
}
