// Package etcdtest starts a real embedded etcd for a test and removes it when
// the test ends.
package etcdtest

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore/etcdserver"
	"github.com/calyx-net/calyx/internal/pki"
)

// Etcd is a running test etcd.
type Etcd struct {
	Server   *etcdserver.Server
	Dir      string
	Endpoint string
	// With StartTLS: the CA, and a client certificate it signed.
	CA         *pki.CA
	ClientCert pki.Files
	// PKIDir holds the CA and the certificates.
	PKIDir string
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
	return start(t, etcdserver.Options{Dir: dir, ClientURL: clientURL, NoFsync: true})
}

// StartTLS runs an embedded etcd that serves TLS on a free loopback port and
// accepts only clients whose certificate its own CA signed. e.ClientCert is one
// such certificate; e.CA issues more.
func StartTLS(t testing.TB) *Etcd {
	t.Helper()
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	ca, server, client := NewPKI(t, pkiDir)
	e := start(t, etcdserver.Options{Dir: filepath.Join(dir, "data"), ClientURL: "https://127.0.0.1:0", NoFsync: true,
		CertFile: server.Cert, KeyFile: server.Key, CAFile: server.CA})
	e.CA, e.ClientCert, e.PKIDir = ca, client, pkiDir
	return e
}

// NewPKI makes a CA in dir with a server certificate for 127.0.0.1 and
// localhost and one client certificate ("test-client").
func NewPKI(t testing.TB, dir string) (ca *pki.CA, server, client pki.Files) {
	t.Helper()
	ca, err := pki.NewCA("calyx test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ca.IssueFiles(dir, "server", "etcd", pki.Server|pki.Client, []string{"127.0.0.1", "localhost"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if client, err = ca.IssueFiles(dir, "client", "test-client", pki.Client, nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	return ca, server, client
}

func start(t testing.TB, o etcdserver.Options) *Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdserver.Start(ctx, o)
	if err != nil {
		t.Fatalf("starting embedded etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return &Etcd{Server: s, Dir: o.Dir, Endpoint: s.Endpoint()}
}

// Client opens a raw etcd client to e (with e.ClientCert when e serves
// TLS), closed by t.Cleanup.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	var tlsCfg *tls.Config
	if e.CA != nil {
		info := transport.TLSInfo{TrustedCAFile: e.ClientCert.CA, CertFile: e.ClientCert.Cert, KeyFile: e.ClientCert.Key}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			t.Fatal(err)
		}
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, TLS: tlsCfg})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
