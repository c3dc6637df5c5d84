package datastore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
	"github.com/calyx-net/calyx/internal/pki"
)

// Mutual TLS works end to end: the client with the CA and its certificate
// reads and writes.
func TestClientMutualTLS(t *testing.T) {
	e := etcdtest.StartTLS(t)
	c, err := datastore.NewClient(datastore.Config{Endpoints: []string{e.Endpoint},
		CAFile: e.ClientCert.CA, CertFile: e.ClientCert.Cert, KeyFile: e.ClientCert.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testCRUD(t, c)
}

// TLS files with an http:// endpoint would be silently ignored by the etcd
// client (plaintext on the wire): refused before anything is sent.
func TestClientRefusesTLSFilesWithHTTPEndpoint(t *testing.T) {
	e := etcdtest.StartTLS(t)
	plain := strings.Replace(e.Endpoint, "https://", "http://", 1)
	_, err := datastore.NewClient(datastore.Config{Endpoints: []string{"https://127.0.0.1:1", plain},
		CAFile: e.ClientCert.CA, CertFile: e.ClientCert.Cert, KeyFile: e.ClientCert.Key})
	if err == nil || !strings.Contains(err.Error(), plain) || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("want an error naming %s and asking for https://, got %v", plain, err)
	}
}

// A missing, foreign or server-only client certificate fails at once with a
// message that says what is wrong, not after the dial timeout.
func TestClientBadCertificateFailsFast(t *testing.T) {
	e := etcdtest.StartTLS(t)
	other, err := pki.NewCA("someone else's CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueFiles(t.TempDir(), "foreign", "intruder", pki.Client, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverOnly, err := e.CA.IssueFiles(t.TempDir(), "serveronly", "not-a-client", pki.Server, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  datastore.Config
		want string
	}{
		{"no client certificate", datastore.Config{CAFile: e.ClientCert.CA}, "client certificate"},
		{"certificate from another CA", datastore.Config{CAFile: e.ClientCert.CA, CertFile: foreign.Cert, KeyFile: foreign.Key}, "client certificate"},
		{"server-only certificate", datastore.Config{CAFile: e.ClientCert.CA, CertFile: serverOnly.Cert, KeyFile: serverOnly.Key}, "client certificate"},
		{"server not signed by our CA", datastore.Config{CAFile: foreign.CA, CertFile: e.ClientCert.Cert, KeyFile: e.ClientCert.Key}, "server certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints = []string{e.Endpoint}
			tc.cfg.DialTimeout = 10 * time.Second
			start := time.Now()
			err := func() error {
				c, err := datastore.NewClient(tc.cfg)
				if err != nil {
					return err
				}
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, _, err = c.List(ctx, datastore.KindIPPool)
				return err
			}()
			took := time.Since(start)
			if err == nil {
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), e.Endpoint) {
				t.Errorf("error should name the endpoint and say %q: %v", tc.want, err)
			}
			if took > 3*time.Second {
				t.Errorf("took %s to fail (a timeout, not a clear refusal): %v", took, err)
			}
		})
	}
}

// The same against the Debian etcd binary (3.4), which the lab runs and
// operators deploy: mutual TLS works, and a missing client certificate is
// refused at once by name.
func TestClientMutualTLSEtcdBinary(t *testing.T) {
	_, server, client := etcdtest.NewPKI(t, t.TempDir())
	endpoint := startEtcdBinaryArgs(t, "https", "--cert-file", server.Cert, "--key-file", server.Key,
		"--trusted-ca-file", server.CA, "--client-cert-auth")
	c, err := datastore.NewClient(datastore.Config{Endpoints: []string{endpoint}, CAFile: client.CA, CertFile: client.Cert, KeyFile: client.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testCRUD(t, c)

	start := time.Now()
	_, err = datastore.NewClient(datastore.Config{Endpoints: []string{endpoint}, CAFile: client.CA})
	if err == nil || !strings.Contains(err.Error(), "client certificate") || time.Since(start) > 3*time.Second {
		t.Fatalf("no client certificate: want a quick refusal naming the client certificate, got %v after %s", err, time.Since(start))
	}
}
