package ipam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

// TestKilledClientsLeaveOnlyWhatGCRepairs runs a burst of CNI-like ADDs and
// DELs on three nodes, cancels contexts at random points (so transactions
// are cut off before, during or after etcd commits them) and closes one
// node's etcd connection half way. Whatever is left must be something
// ipam check reports as repairable and ipam gc repairs.
func TestKilledClientsLeaveOnlyWhatGCRepairs(t *testing.T) {
	c := newCluster(t)
	c.pool("v4", "10.244.0.0/22", 26, "")
	c.pool("v6", "fd00:244::/64", 122, "")
	nodes := []string{"node-a", "node-b", "node-c"}
	ims := make([]*IPAM, len(nodes))
	clients := make([]*datastore.Client, len(nodes))
	for k, n := range nodes {
		c.node(n, nil)
		clients[k] = datastore.NewClientFromEtcd(c.e.Client(t))
		ims[k] = New(clients[k], testLog())
	}

	var cancelled, committed atomic.Int64
	var wg sync.WaitGroup
	for n, node := range nodes {
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(n), uint64(g)))
				for k := 0; k < 40; k++ {
					if node == "node-c" && g == 0 && k == 20 {
						// Kill node-c: its connection goes away mid-burst.
						clients[n].Etcd().Close()
					}
					h := fmt.Sprintf("%s-%d-%d.eth0", node, g, k)
					ep := datastore.WorkloadEndpointName(node, fmt.Sprintf("%d%d", g, k), "eth0")
					ctx, cancel := context.WithTimeout(c.ctx, time.Duration(rng.IntN(15000))*time.Microsecond)
					got, err := ims[n].Allocate(ctx, Request{Handle: h, Node: node, Attrs: Attributes{Endpoint: ep}})
					if err == nil {
						// The agent writes the endpoint after ADD; it may
						// die before that too.
						err = writeEndpoint(ctx, clients[n], ep, node, got)
					}
					cancel()
					if err != nil {
						cancelled.Add(1)
						continue
					}
					committed.Add(1)
					if rng.IntN(3) == 0 {
						// A DEL cut short after it removed the endpoint.
						dctx, dcancel := context.WithTimeout(c.ctx, time.Duration(rng.IntN(10000))*time.Microsecond)
						if _, err := clients[n].Etcd().Delete(dctx, datastore.Key(datastore.KindWorkloadEndpoint, ep)); err == nil {
							_ = ims[n].Release(dctx, h)
						}
						dcancel()
					}
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("ADDs completed: %d, cut short: %d", committed.Load(), cancelled.Load())
	if committed.Load() == 0 || cancelled.Load() == 0 {
		t.Fatalf("the burst should both complete and cut short some ADDs (completed %d, cut %d)", committed.Load(), cancelled.Load())
	}

	operator := c.ipam()
	problems, err := operator.Check(c.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ipam check after the burst: %v", kinds(problems))
	for _, p := range problems {
		if !p.GCRepairs {
			t.Errorf("problem gc cannot repair: %+v", p)
		}
	}
	// The operator's cluster-wide gc cannot see the nodes' workloads: it
	// keeps every allocation of a registered node. Each node's own gc (as
	// its agent runs it, knowing no workload of these exists) releases them.
	if rep, err := operator.GC(c.ctx, 0); err != nil || len(rep.Released)+len(rep.FreedOrphans) != 0 {
		t.Fatalf("cluster-wide gc released %d handles and %d orphans of registered nodes (%v)", len(rep.Released), len(rep.FreedOrphans), err)
	}
	for _, n := range nodes {
		operator.SetInUse(n, func(*Handle) bool { return false })
		rep, err := operator.GCNode(c.ctx, n, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("ipam gc of %s released %d handles, freed %d orphans, skipped %d", n, len(rep.Released), len(rep.FreedOrphans), rep.Skipped)
	}
	if problems, err = operator.Check(c.ctx); err != nil || len(problems) != 0 {
		t.Fatalf("ipam check after gc: %+v, %v; want nothing", problems, err)
	}

	// Every endpoint's addresses are allocated to it and to nobody else.
	st, err := readState(c.ctx, c.ds.Etcd())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for name, w := range st.endpoints {
		for _, n := range w.Spec.IPNetworks {
			ip := netip.MustParsePrefix(n).Addr()
			if prev, dup := seen[ip]; dup {
				t.Fatalf("%s is on endpoints %s and %s", ip, prev, name)
			}
			seen[ip] = name
		}
	}
	var inBlocks int
	for _, b := range st.blocks {
		inBlocks += b.Used()
	}
	if inBlocks != len(seen) {
		t.Fatalf("%d addresses allocated after gc, endpoints use %d", inBlocks, len(seen))
	}
}

func writeEndpoint(ctx context.Context, c *datastore.Client, name, node string, ips []netip.Prefix) error {
	var nets []string
	for _, p := range ips {
		nets = append(nets, p.String())
	}
	_, err := c.Create(ctx, &datastore.WorkloadEndpoint{
		TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindWorkloadEndpoint},
		Metadata: datastore.Metadata{Name: name},
		Spec:     datastore.WorkloadEndpointSpec{Node: node, Workload: name, InterfaceName: "cx0123456789a", IPNetworks: nets},
	})
	if errors.Is(err, datastore.ErrAlreadyExists) {
		return nil
	}
	return err
}
