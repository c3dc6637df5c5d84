// Package etcdtest starts a real embedded etcd for a test and removes it when
// the test ends.
package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore/etcdserver"
)

// Etcd is a running test etcd.
type Etcd struct {
	Server   *etcdserver.Server
	Dir      string
	Endpoint string
}

// Start runs an embedded etcd on a free loopback port with its data in a
// temporary directory; it is stopped by t.Cleanup.
func Start(t testing.TB) *Etcd {
	t.Helper()
	dir := t.TempDir()
	return StartIn(t, dir, "http://127.0.0.1:0")
}

// StartIn runs an embedded etcd on clientURL with its data in dir, so that a
// test can stop it and start it again on the same data and port.
func StartIn(t testing.TB, dir, clientURL string) *Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdserver.Start(ctx, etcdserver.Options{Dir: dir, ClientURL: clientURL, NoFsync: true})
	if err != nil {
		t.Fatalf("starting embedded etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return &Etcd{Server: s, Dir: dir, Endpoint: s.Endpoint()}
}

// Client opens a client to e, closed by t.Cleanup.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
