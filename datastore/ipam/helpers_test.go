package ipam

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
)

// testLog is quiet unless IPAM_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("IPAM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// cluster is one real etcd and helpers to fill it.
type cluster struct {
	t   *testing.T
	e   *etcdtest.Etcd
	ds  *datastore.Client // the operator's client
	ctx context.Context
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	e := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return &cluster{t: t, e: e, ds: datastore.NewClientFromEtcd(e.Client(t)), ctx: ctx}
}

// ipam is a new IPAM with its own etcd connection, as one agent has.
func (c *cluster) ipam() *IPAM {
	return New(datastore.NewClientFromEtcd(c.e.Client(c.t)), testLog())
}

func (c *cluster) apply(r datastore.Resource) {
	c.t.Helper()
	if err := datastore.Validate(r); err != nil {
		c.t.Fatalf("invalid test resource: %v", err)
	}
	if _, err := c.ds.Apply(c.ctx, r); err != nil {
		c.t.Fatalf("apply %s: %v", datastore.Describe(r), err)
	}
}

func (c *cluster) pool(name, cidr string, blockSize int, selector string) {
	c.apply(&datastore.IPPool{
		TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindIPPool},
		Metadata: datastore.Metadata{Name: name},
		Spec:     datastore.IPPoolSpec{CIDR: cidr, BlockSize: blockSize, NodeSelector: selector},
	})
}

func (c *cluster) node(name string, labels map[string]string) {
	c.apply(&datastore.Node{
		TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindNode},
		Metadata: datastore.Metadata{Name: name, Labels: labels},
		Spec:     datastore.NodeSpec{Address: "198.18.0.1"},
	})
}

func (c *cluster) config(strict bool, maxBlocks int) {
	c.apply(&datastore.IPAMConfig{
		TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindIPAMConfig},
		Metadata: datastore.Metadata{Name: datastore.DefaultSingletonName},
		Spec:     datastore.IPAMConfigSpec{StrictAffinity: strict, MaxBlocksPerHost: maxBlocks},
	})
}

// endpoint writes the WorkloadEndpoint an agent would write after ADD.
func (c *cluster) endpoint(name, node string, ips []netip.Prefix) {
	c.attachment(name, node, "", "", ips)
}

// attachment is endpoint naming the container and its interface.
func (c *cluster) attachment(name, node, containerID, ifName string, ips []netip.Prefix) {
	var nets []string
	for _, p := range ips {
		nets = append(nets, p.String())
	}
	c.apply(&datastore.WorkloadEndpoint{
		TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindWorkloadEndpoint},
		Metadata: datastore.Metadata{Name: name},
		Spec: datastore.WorkloadEndpointSpec{Node: node, Workload: name, InterfaceName: "cx0123456789a", IPNetworks: nets,
			ContainerID: containerID, ContainerInterface: ifName},
	})
}

// state reads every block and handle straight from etcd.
func (c *cluster) state() (map[netip.Prefix]*Block, map[string]*Handle) {
	c.t.Helper()
	st, err := readState(c.ctx, c.ds.Etcd())
	if err != nil {
		c.t.Fatal(err)
	}
	return st.blocks, st.handles
}

func withPrefix() clientv3.OpOption { return clientv3.WithPrefix() }

// now lets tests judge ages the way gc does.
func (st *clusterState) now() time.Time { return time.Now() }
