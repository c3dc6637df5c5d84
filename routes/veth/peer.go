package veth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/calyx-net/calyx/routes/netns"
)

// hostIfPrefix starts the name of every host end the agent makes.
const hostIfPrefix = "cx"

// errNotOurs: a veth whose peer is not one of our host ends.
var errNotOurs = errors.New("not a Calyx veth")

// ownWorkloadEnd accepts the workload end of a pair only when its peer is
// one of ours: an interface in the host namespace named cx… or carrying
// HostMAC (a host end someone renamed). Another plugin's veth, or one
// between two containers, that happens to bear the name is left alone: a
// DEL must not take down what Calyx did not make.
func (p *Plumber) ownWorkloadEnd(h *netlink.Handle, l netlink.Link) error {
	if _, err := p.hostPeer(h, l); err != nil {
		return fmt.Errorf("%w: %w", errNotOurs, err)
	}
	return nil
}

// hostPeer returns the name of l's peer when it is one of our host ends,
// or an error saying why it is not.
func (p *Plumber) hostPeer(h *netlink.Handle, l netlink.Link) (string, error) {
	attrs := l.Attrs()
	if attrs.NetNsID < 0 {
		return "", errors.New("its peer is in the same namespace")
	}
	hostNS, err := netns.Open(p.opts.HostNetNSPath)
	if err != nil {
		return "", err
	}
	defer hostNS.Close()
	hostID, err := h.GetNetNsIdByFd(int(hostNS))
	if err != nil {
		return "", fmt.Errorf("the host namespace's id seen from the workload: %w", err)
	}
	if hostID < 0 || hostID != attrs.NetNsID {
		return "", errors.New("its peer is in another namespace than the host's")
	}
	var peer netlink.Link
	err = netns.DoHandle(p.opts.HostNetNSPath, func(hh *netlink.Handle) error {
		var lerr error
		peer, lerr = hh.LinkByIndex(attrs.ParentIndex)
		return lerr
	})
	if err != nil {
		return "", fmt.Errorf("its peer (index %d in the host namespace): %w", attrs.ParentIndex, err)
	}
	pa := peer.Attrs()
	if !strings.HasPrefix(pa.Name, hostIfPrefix) && pa.HardwareAddr.String() != HostMAC.String() {
		return "", fmt.Errorf("its peer %s in the host namespace is not a Calyx host end (cx… or %s)", pa.Name, HostMAC)
	}
	return pa.Name, nil
}
