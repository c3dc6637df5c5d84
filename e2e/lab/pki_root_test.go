package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calyx-net/calyx/internal/pki"
)

// testEtcdRefusesStrangers: the lab's etcd, seen from a host namespace,
// refuses a TLS client without a certificate, one whose certificate another
// CA signed, and plaintext; the agents' own command lines carry their host's
// certificate.
func testEtcdRefusesStrangers(ctx context.Context, t *testing.T, l *Lab) {
	dial := dialerIn(l.names.host(1))
	caPEM, err := os.ReadFile(clientFiles(l.Dir(), AdminIdentity).CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	other, err := pki.NewCA("stranger", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := other.Issue("host1", pki.Client, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "another CA's certificate": {foreign}} {
		conn, err := dial(ctx, strings.TrimPrefix(EtcdEndpoint, "https://"))
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(conn, &tls.Config{RootCAs: roots, ServerName: EtcdIP, Certificates: certs, NextProtos: []string{"h2"}})
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Read(make([]byte, 1))
		}
		tc.Close()
		if err == nil || !strings.Contains(err.Error(), "tls:") {
			t.Errorf("%s: etcd did not refuse the handshake: %v", name, err)
		}
	}
	plain, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{strings.Replace(EtcdEndpoint, "https://", "http://", 1)},
		DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := plain.Put(short, "/lab-test/plaintext", "v"); err == nil {
		t.Error("a plaintext client wrote to the lab's etcd")
	}
	argv := strings.Join(AgentArgv(l.Options(), l.st.Hosts[0]), " ")
	f := clientFiles(l.Dir(), "host1")
	if !strings.Contains(argv, "--etcd-endpoints https://") || !strings.Contains(argv, "--etcd-cert "+f.Cert) || !strings.Contains(argv, "--etcd-key "+f.Key) {
		t.Errorf("host1's agent does not use its certificate: %s", argv)
	}
}
