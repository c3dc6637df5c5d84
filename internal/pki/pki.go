// Package pki issues the small certificate authority that the lab and the
// tests use for etcd's mutual TLS: one CA, a server certificate for etcd and
// one client certificate per host. Keys are ECDSA P-256 (fast to make, what
// etcd and Go's TLS prefer) and are written mode 0600.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Usage says what a certificate may be used for.
type Usage int

const (
	// Server certificates authenticate a listener (etcd's client port).
	Server Usage = 1 << iota
	// Client certificates authenticate a caller (an agent, calyxctl).
	Client
)

// Files names a certificate, its key and the CA that signed it.
type Files struct {
	CA, Cert, Key string
}

// CA signs certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// NewCA makes a self-signed CA valid for the given time.
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := template(commonName, validity)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}, nil
}

// LoadCA reads a CA written by WriteCA.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s, %s: not PEM", certPath, keyPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	return &CA{cert: cert, key: key, pem: certPEM}, nil
}

// CertPEM is the CA certificate, for clients and servers to trust.
func (ca *CA) CertPEM() []byte { return ca.pem }

// WriteCA writes ca.crt and ca.key into dir and returns their paths.
func (ca *CA) WriteCA(dir string) (certPath, keyPath string, err error) {
	der, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := writeFiles(dir, map[string][]byte{certPath: ca.pem}, map[string][]byte{keyPath: pemBlock("EC PRIVATE KEY", der)}); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// Issue signs a new key pair. hosts (IP addresses or DNS names) go into the
// subject alternative names; a server certificate needs the names clients
// dial.
func (ca *CA) Issue(commonName string, usage Usage, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if usage&(Server|Client) == 0 {
		return nil, nil, errors.New("pki: a certificate needs Server or Client usage")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := template(commonName, validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if usage&Server != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if usage&Client != 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// IssueFiles issues a pair and writes it as dir/name.crt and dir/name.key,
// with the CA beside them as dir/ca.crt (written if missing).
func (ca *CA) IssueFiles(dir, name, commonName string, usage Usage, hosts []string, validity time.Duration) (Files, error) {
	certPEM, keyPEM, err := ca.Issue(commonName, usage, hosts, validity)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	public := map[string][]byte{f.Cert: certPEM}
	if _, err := os.Stat(f.CA); err != nil {
		public[f.CA] = ca.pem
	}
	if err := writeFiles(dir, public, map[string][]byte{f.Key: keyPEM}); err != nil {
		return Files{}, err
	}
	return f, nil
}

func template(commonName string, validity time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"calyx"}},
		// A minute of slack for clocks of namespaces and hosts that differ.
		NotBefore: now.Add(-time.Minute),
		NotAfter:  now.Add(validity),
	}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFiles(dir string, public, secret map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for path, data := range public {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	for path, data := range secret {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
