package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
)

func pool(name, cidr string) *datastore.IPPool {
	r, _ := datastore.NewResource(datastore.KindIPPool)
	p := r.(*datastore.IPPool)
	p.Metadata.Name = name
	p.Spec.CIDR = cidr
	return p
}

func newClient(t *testing.T, endpoint string) *datastore.Client {
	t.Helper()
	c, err := datastore.NewClient(datastore.Config{Endpoints: []string{endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientCRUDEmbedded(t *testing.T) {
	e := etcdtest.Start(t)
	testCRUD(t, newClient(t, e.Endpoint))
}

// The same against the Debian etcd binary (3.4): the v3.7 client must work
// with the etcd that operators actually run.
func TestClientCRUDEtcdBinary(t *testing.T) {
	endpoint := startEtcdBinary(t)
	testCRUD(t, newClient(t, endpoint))
}

func testCRUD(t *testing.T, c *datastore.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	created, err := c.Create(ctx, pool("a", "10.244.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if created.GetMeta().ResourceVersion == "" || created.GetMeta().CreationTimestamp == "" {
		t.Errorf("create did not set resourceVersion/creationTimestamp: %+v", created.GetMeta())
	}
	if _, err := c.Create(ctx, pool("a", "10.245.0.0/16")); !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatalf("second create: want ErrAlreadyExists, got %v", err)
	}

	got, err := c.Get(ctx, datastore.KindIPPool, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.(*datastore.IPPool).Spec.CIDR != "10.244.0.0/16" {
		t.Errorf("get: %+v", got)
	}

	// Optimistic update: the first writer wins, the stale one conflicts.
	first := got.(*datastore.IPPool)
	stale := *first
	first.Spec.NATOutgoing = true
	if _, err := c.Update(ctx, first); err != nil {
		t.Fatal(err)
	}
	stale.Spec.Disabled = true
	if _, err := c.Update(ctx, &stale); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("stale update: want ErrConflict, got %v", err)
	}

	// Apply replaces whatever is there and keeps the creation time.
	ap := pool("a", "10.244.0.0/16")
	ap.Spec.BlockSize = 28
	if _, err := c.Apply(ctx, ap); err != nil {
		t.Fatal(err)
	}
	got, _ = c.Get(ctx, datastore.KindIPPool, "a")
	if got.(*datastore.IPPool).Spec.BlockSize != 28 || got.GetMeta().CreationTimestamp != created.GetMeta().CreationTimestamp {
		t.Errorf("apply: %+v", got)
	}
	if _, err := c.Apply(ctx, pool("b", "10.246.0.0/16")); err != nil {
		t.Fatal(err)
	}

	list, rev, err := c.List(ctx, datastore.KindIPPool)
	if err != nil || len(list) != 2 || rev == 0 {
		t.Fatalf("list: %d items, rev %d, %v", len(list), rev, err)
	}
	if list[0].GetMeta().Name != "a" || list[1].GetMeta().Name != "b" {
		t.Errorf("list not sorted by name")
	}

	if err := c.Delete(ctx, datastore.KindIPPool, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, datastore.KindIPPool, "a"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("second delete: want ErrNotFound, got %v", err)
	}
	if _, err := c.Get(ctx, datastore.KindIPPool, "a"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("get after delete: want ErrNotFound, got %v", err)
	}
}

func TestWriteAllIsAllOrNothing(t *testing.T) {
	e := etcdtest.Start(t)
	c := newClient(t, e.Endpoint)
	ctx := context.Background()
	if _, err := c.Create(ctx, pool("exists", "10.1.0.0/16")); err != nil {
		t.Fatal(err)
	}
	// Create mode: one existing object fails the whole set.
	err := c.WriteAll(ctx, []datastore.Resource{pool("new", "10.2.0.0/16"), pool("exists", "10.1.0.0/16")}, datastore.ModeCreate)
	if !errors.Is(err, datastore.ErrAlreadyExists) {
		t.Fatalf("want ErrAlreadyExists, got %v", err)
	}
	if _, err := c.Get(ctx, datastore.KindIPPool, "new"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("a failed create-all wrote part of the set")
	}
	// A new pool overlapping a stored one is refused before anything is written.
	err = c.WriteAll(ctx, []datastore.Resource{pool("new", "10.2.0.0/16"), pool("over", "10.1.128.0/17")}, datastore.ModeApply)
	if err == nil {
		t.Fatal("overlap with a stored pool accepted")
	}
	if _, err := c.Get(ctx, datastore.KindIPPool, "new"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("a refused set wrote part of itself")
	}
	// Re-applying a stored pool is not an overlap with itself.
	if err := c.WriteAll(ctx, []datastore.Resource{pool("exists", "10.1.0.0/16"), pool("new", "10.2.0.0/16")}, datastore.ModeApply); err != nil {
		t.Fatal(err)
	}
}

// startEtcdBinary runs the Debian etcd as a child with data in a temp dir.
func startEtcdBinary(t *testing.T) string {
	t.Helper()
	return startEtcdBinaryArgs(t, "http")
}

// startEtcdBinaryArgs runs it with scheme (http or https) on the client URL
// and extra flags (the TLS ones).
func startEtcdBinaryArgs(t *testing.T, scheme string, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd binary not installed (make deps installs etcd-server)")
	}
	dir := t.TempDir()
	client, peer := freePort(t), freePort(t)
	clientURL := fmt.Sprintf("%s://127.0.0.1:%d", scheme, client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	cmd := exec.Command(bin, "--name", "t", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "t="+peerURL, "--heartbeat-interval", "10", "--election-timeout", "50")
	cmd.Args = append(cmd.Args, extra...)
	logf, _ := os.Create(filepath.Join(dir, "etcd.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", client)); err == nil {
			conn.Close()
			return clientURL
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("etcd binary did not start; see etcd.log")
	return ""
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
