package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/calyx-net/calyx/datastore"
)

// detectNodeIP is the source address the kernel would use to reach the
// outside world: that of the default route, as --node-ip documents.
func detectNodeIP() (netip.Addr, error) {
	routes, err := netlink.RouteGet(net.IPv4(192, 0, 2, 1))
	if err != nil || len(routes) == 0 || routes[0].Src == nil {
		return netip.Addr{}, fmt.Errorf("cannot find the default route's source address (%v): set --node-ip", err)
	}
	a, ok := netip.AddrFromSlice(routes[0].Src.To4())
	if !ok {
		return netip.Addr{}, fmt.Errorf("the default route's source address %v is not IPv4: set --node-ip", routes[0].Src)
	}
	return a, nil
}

// nodeRegistration is what the agent registers its Node with.
type nodeRegistration struct {
	name        string
	addr, addr6 netip.Addr
	asn         uint32
	labels      map[string]string
	takeover    bool // --takeover-node
}

// errNodeTaken: a Node of this name exists with another address.
var errNodeTaken = errors.New("a Node of this name exists with another address")

// registerNode creates this node's Node or brings its address (and AS, if
// the flag set one) up to date, keeping what operators set: labels, route
// reflector cluster ID, router ID. An existing Node with another address
// is refused unless takeover is set: two hosts started with one name
// would otherwise share an identity (the second takes the first's blocks,
// endpoints and BGP sessions).
func registerNode(ctx context.Context, c *datastore.Client, reg nodeRegistration) (*datastore.Node, error) {
	name, addr, addr6, asn, labels := reg.name, reg.addr, reg.addr6, reg.asn, reg.labels
	for attempt := 0; attempt < 5; attempt++ {
		r, err := c.Get(ctx, datastore.KindNode, name)
		if errors.Is(err, datastore.ErrNotFound) {
			nr, _ := datastore.NewResource(datastore.KindNode)
			n := nr.(*datastore.Node)
			n.Metadata.Name = name
			n.Metadata.Labels = map[string]string{datastore.LabelNode: name}
			maps.Copy(n.Metadata.Labels, labels)
			fillNode(n, addr, addr6, asn)
			if err := datastore.Validate(n); err != nil {
				return nil, err
			}
			if _, err := c.Create(ctx, n); errors.Is(err, datastore.ErrAlreadyExists) {
				continue
			} else if err != nil {
				return nil, err
			}
			return n, nil
		} else if err != nil {
			return nil, err
		}
		n := r.(*datastore.Node)
		if err := checkNodeAddress(n, addr, reg.takeover); err != nil {
			return nil, err
		}
		before := n.Spec
		hadLabel := n.Metadata.Labels[datastore.LabelNode] == name
		for k, v := range labels {
			hadLabel = hadLabel && n.Metadata.Labels[k] == v
		}
		fillNode(n, addr, addr6, asn)
		if before == n.Spec && hadLabel {
			return n, nil
		}
		if n.Metadata.Labels == nil {
			n.Metadata.Labels = map[string]string{}
		}
		n.Metadata.Labels[datastore.LabelNode] = name
		maps.Copy(n.Metadata.Labels, labels)
		if _, err := c.Update(ctx, n); errors.Is(err, datastore.ErrConflict) {
			continue
		} else if err != nil {
			return nil, err
		}
		return n, nil
	}
	return nil, fmt.Errorf("registering node %q: too many concurrent updates", name)
}

func fillNode(n *datastore.Node, addr, addr6 netip.Addr, asn uint32) {
	n.Spec.Address = addr.String()
	if addr6.IsValid() {
		n.Spec.IPv6Address = addr6.String()
	}
	if asn != 0 {
		n.Spec.ASNumber = asn
	}
}

// checkNodeAddress refuses to take over an existing Node registered with
// another IPv4 address, unless takeover.
func checkNodeAddress(n *datastore.Node, addr netip.Addr, takeover bool) error {
	if n.Spec.Address == "" || n.Spec.Address == addr.String() || takeover {
		return nil
	}
	return fmt.Errorf("%w: Node %q has address %s, this host %s; if this host replaces it, start with --takeover-node; if it is another host, give it its own --node-name",
		errNodeTaken, n.Metadata.Name, n.Spec.Address, addr)
}
