package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

// ClusterResources are what Up writes to etcd before any agent starts:
//
//   - the IPPool "lab-pool" for Options.Pool;
//   - BGPConfig "default": AS NodeAS, node-to-node mesh on, or off when
//     there are reflectors;
//   - with reflectors: a Node for each of hosts 1..K with
//     routeReflectorClusterID and the ReflectorLabel (the agents register
//     their own Node too; markReflectors re-asserts these fields after);
//   - with the BIRD peer: a BGPPeer "tor" (TorIP, TorAS) for every node;
//   - dual stack (IPv6): the IPPool "lab-pool6" for Options.Pool6 and, with
//     the BIRD peer, a second BGPPeer "tor6" (TorIPv6, TorAS): a separate
//     IPv6 session (see birdConfig for why).
//
// This is the one place that says how a lab's cluster is configured; adjust
// it here when the agent's expectations change.
func ClusterResources(o Options) []datastore.Resource {
	mesh := o.Reflectors == 0
	rs := []datastore.Resource{
		&datastore.BGPConfig{
			TypeMeta: typeMeta(datastore.KindBGPConfig),
			Metadata: datastore.Metadata{Name: datastore.DefaultSingletonName},
			Spec:     datastore.BGPConfigSpec{ASNumber: NodeAS, NodeToNodeMesh: &mesh},
		},
		&datastore.IPPool{
			TypeMeta: typeMeta(datastore.KindIPPool),
			Metadata: datastore.Metadata{Name: "lab-pool"},
			Spec:     datastore.IPPoolSpec{CIDR: o.Pool},
		},
	}
	if o.IPv6 {
		rs = append(rs, &datastore.IPPool{
			TypeMeta: typeMeta(datastore.KindIPPool),
			Metadata: datastore.Metadata{Name: "lab-pool6"},
			Spec:     datastore.IPPoolSpec{CIDR: o.Pool6},
		})
	}
	for i := 1; i <= o.Reflectors; i++ {
		rs = append(rs, reflectorNode(i))
	}
	if o.Peer == PeerBird {
		rs = append(rs, &datastore.BGPPeer{
			TypeMeta: typeMeta(datastore.KindBGPPeer),
			Metadata: datastore.Metadata{Name: "tor"},
			Spec:     datastore.BGPPeerSpec{PeerIP: TorIP, ASNumber: TorAS},
		})
		if o.IPv6 {
			rs = append(rs, &datastore.BGPPeer{
				TypeMeta: typeMeta(datastore.KindBGPPeer),
				Metadata: datastore.Metadata{Name: "tor6"},
				Spec:     datastore.BGPPeerSpec{PeerIP: TorIPv6, ASNumber: TorAS},
			})
		}
	}
	return rs
}

func typeMeta(k datastore.Kind) datastore.TypeMeta {
	return datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: k}
}

func reflectorNode(i int) *datastore.Node {
	return &datastore.Node{
		TypeMeta: typeMeta(datastore.KindNode),
		Metadata: datastore.Metadata{Name: HostName(i), Labels: map[string]string{ReflectorLabel: "true"}},
		Spec:     datastore.NodeSpec{Address: HostIP(i), RouteReflectorClusterID: ReflectorClusterID},
	}
}

// writeClusterResources validates and writes ClusterResources in one
// transaction.
func (l *Lab) writeClusterResources(ctx context.Context) error {
	rs := ClusterResources(l.opts)
	for _, r := range rs {
		if err := datastore.Validate(r); err != nil {
			return fmt.Errorf("lab cluster resource %s: %w", datastore.Describe(r), err)
		}
	}
	ds, err := l.Datastore()
	if err != nil {
		return err
	}
	if err := ds.WriteAll(ctx, rs, datastore.ModeApply); err != nil {
		return fmt.Errorf("writing the lab's cluster resources: %w", err)
	}
	return nil
}

// markReflectors makes sure the reflector hosts' Nodes keep their cluster
// ID and label once their agents have registered them (an agent that
// rewrites its own Node at start might drop them). It waits for each Node
// to exist.
func (l *Lab) markReflectors(ctx context.Context) error {
	ds, err := l.Datastore()
	if err != nil {
		return err
	}
	for i := 1; i <= l.opts.Reflectors; i++ {
		changed, err := ensureReflector(ctx, ds, i)
		if err != nil {
			return err
		}
		if changed {
			// The agent's own registration dropped the fields.
			l.log.Warn("route reflector fields restored on the Node", "node", HostName(i))
		}
	}
	return nil
}

// ensureReflector reports whether it had to change the Node.
func ensureReflector(ctx context.Context, ds *datastore.Client, i int) (bool, error) {
	want := reflectorNode(i)
	for {
		r, err := ds.Get(ctx, datastore.KindNode, want.Metadata.Name)
		if errors.Is(err, datastore.ErrNotFound) {
			_, err = ds.Create(ctx, want)
			if err == nil || !errors.Is(err, datastore.ErrAlreadyExists) {
				return err == nil, err
			}
			continue
		}
		if err != nil {
			return false, err
		}
		n := r.(*datastore.Node)
		if n.Spec.RouteReflectorClusterID == ReflectorClusterID && n.Metadata.Labels[ReflectorLabel] == "true" {
			return false, nil
		}
		n.Spec.RouteReflectorClusterID = ReflectorClusterID
		if n.Metadata.Labels == nil {
			n.Metadata.Labels = map[string]string{}
		}
		n.Metadata.Labels[ReflectorLabel] = "true"
		if _, err = ds.Update(ctx, n); err == nil {
			return true, nil
		}
		if !errors.Is(err, datastore.ErrConflict) {
			return false, fmt.Errorf("marking %s as a route reflector: %w", n.Metadata.Name, err)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Apply decodes a YAML/JSON file of Calyx resources (as `calyxctl apply -f`
// takes) and writes them to the lab's etcd.
func (l *Lab) Apply(ctx context.Context, yamlOrJSON []byte) error {
	docs, err := datastore.DecodeFile(yamlOrJSON)
	if err != nil {
		return err
	}
	rs := make([]datastore.Resource, 0, len(docs))
	for _, d := range docs {
		rs = append(rs, d.Resource)
	}
	ds, err := l.Datastore()
	if err != nil {
		return err
	}
	return ds.WriteAll(ctx, rs, datastore.ModeApply)
}
