package lab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calyx-net/calyx/datastore"
)

// TestUpWithoutAgents builds a lab with its fabric, etcd and BIRD but no
// agent, checks each part for real, then takes it down and checks nothing
// is left.
func TestUpWithoutAgents(t *testing.T) {
	requireRoot(t, "bird", "birdc")
	l := upTest(t, Options{Hosts: 2, Peer: PeerBird, SkipAgents: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("fabric", func(t *testing.T) {
		for _, c := range []struct{ from, to string }{
			{"host1", HostIP(2)}, {"host2", HostIP(1)}, {"host1", EtcdIP}, {"host2", TorIP}, {"host1", FabricGateway},
		} {
			if err := l.Ping(c.from, c.to); err != nil {
				t.Errorf("%s -> %s: %v", c.from, c.to, err)
			}
		}
		if out, err := l.Exec("host1", "cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || out != "1" {
			t.Errorf("host1 ip_forward = %q (%v), want 1", out, err)
		}
		if out, err := l.Exec("host1", "ip", "route", "show", "default"); err != nil || !strings.Contains(out, "via "+FabricGateway) {
			t.Errorf("host1 default route = %q (%v), want via %s", out, err, FabricGateway)
		}
	})

	t.Run("etcd answers from a host namespace", func(t *testing.T) {
		tlsCfg, err := etcdTLS(l.Dir(), "host2")
		if err != nil {
			t.Fatal(err)
		}
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{EtcdEndpoint},
			TLS:         tlsCfg,
			DialTimeout: 5 * time.Second,
			DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialerIn(l.names.host(2)))},
			Logger:      zap.NewNop(),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Put(ctx, "/lab-test/k", "v"); err != nil {
			t.Fatalf("put from host2: %v", err)
		}
		resp, err := c.Get(ctx, "/lab-test/k")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
			t.Fatalf("get from host2: %v %v", resp, err)
		}
	})

	t.Run("etcd refuses clients without a lab certificate", func(t *testing.T) {
		testEtcdRefusesStrangers(ctx, t, l)
	})

	t.Run("cluster resources", func(t *testing.T) {
		ds, err := l.Datastore()
		if err != nil {
			t.Fatal(err)
		}
		pool, err := ds.Get(ctx, datastore.KindIPPool, "lab-pool")
		if err != nil || pool.(*datastore.IPPool).Spec.CIDR != DefaultPool {
			t.Errorf("IPPool lab-pool: %+v %v", pool, err)
		}
		bc, err := ds.Get(ctx, datastore.KindBGPConfig, "default")
		if err != nil || !bc.(*datastore.BGPConfig).Spec.MeshEnabled() || bc.(*datastore.BGPConfig).Spec.ASNumber != NodeAS {
			t.Errorf("BGPConfig: %+v %v", bc, err)
		}
		peer, err := ds.Get(ctx, datastore.KindBGPPeer, "tor")
		if err != nil || peer.(*datastore.BGPPeer).Spec.PeerIP != TorIP {
			t.Errorf("BGPPeer tor: %+v %v", peer, err)
		}
	})

	t.Run("bird", func(t *testing.T) {
		out, err := l.Birdc(ctx, "show", "status")
		if err != nil || !strings.Contains(out, "Router ID is "+TorIP) {
			t.Fatalf("birdc show status: %q %v", out, err)
		}
		up, err := l.BirdEstablished(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := up["host1"]; !ok {
			t.Errorf("BIRD has no session to host1: %v", up)
		}
		if _, ok := up["host2"]; !ok {
			t.Errorf("BIRD has no session to host2: %v", up)
		}
	})

	t.Run("exec targets", func(t *testing.T) {
		for target, want := range map[string]string{"etcd": EtcdIP, "tor": TorIP, "fabric": FabricGateway, "host2": HostIP(2)} {
			out, err := l.Exec(target, "ip", "-4", "-o", "addr", "show")
			if err != nil || !strings.Contains(out, want+"/") {
				t.Errorf("exec %s: want %s in %q (%v)", target, want, out, err)
			}
		}
		if _, err := l.Exec("nosuch", "true"); err == nil {
			t.Error("exec on an unknown target succeeded")
		}
	})

	// Down: nothing left, twice is fine, logs are kept.
	procs := l.Processes()
	if len(procs) != 2 {
		t.Errorf("processes = %+v, want etcd and bird", procs)
	}
	if err := l.Teardown(); err != nil {
		t.Fatalf("down: %v", err)
	}
	assertNoLeftovers(t, l.Prefix(), procs)
	if _, err := os.Stat(statePath(l.Dir())); !os.IsNotExist(err) {
		t.Errorf("state file still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(logDir(l.Dir()), "etcd1.log")); err != nil {
		t.Errorf("etcd log not kept: %v", err)
	}
	if err := l.Teardown(); err != nil {
		t.Errorf("second down: %v", err)
	}
	if err := DownDir(l.Dir(), false, testLogger(t)); err != nil {
		t.Errorf("down of a lab already down: %v", err)
	}
}
