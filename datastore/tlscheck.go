package datastore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// checkEndpointSchemes refuses TLS files with a plaintext endpoint: the etcd
// client would silently ignore the certificates for http:// and unix://
// and send everything, the datastore's contents included, in clear.
func checkEndpointSchemes(endpoints []string, withTLS bool) error {
	for _, ep := range endpoints {
		scheme, _, found := strings.Cut(ep, "://")
		if !found {
			continue // host:port: the client uses TLS when it has a config
		}
		switch scheme {
		case "https", "unixs":
		case "http", "unix":
			if withTLS {
				return fmt.Errorf("etcd endpoint %s is %s:// but TLS files (--etcd-ca/--etcd-cert/--etcd-key) are given: use https:// (with %s:// the certificates would be ignored and traffic sent in plaintext)", ep, scheme, scheme)
			}
		default:
			return fmt.Errorf("etcd endpoint %s: unknown scheme %q (want https:// or http://)", ep, scheme)
		}
	}
	return nil
}

func anyHTTPS(endpoints []string) bool {
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://") {
			return true
		}
	}
	return false
}

// probeTLS makes one TLS handshake with each endpoint in turn, so that a
// certificate problem is reported at once and by name instead of as a
// request timeout (the gRPC client retries a failed handshake silently).
// An endpoint that does not answer is not an error here: etcd may still be
// starting and the client retries. The first endpoint that accepts us ends
// the probe.
func probeTLS(ctx context.Context, c Config, cfg *tls.Config) error {
	var firstErr error
	for _, ep := range c.Endpoints {
		err := probeOne(ctx, ep, cfg, c)
		if err == nil {
			return nil
		}
		if errors.Is(err, errUnreachable) {
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

var errUnreachable = errors.New("unreachable")

func probeOne(ctx context.Context, ep string, base *tls.Config, c Config) error {
	host, network := ep, "tcp"
	if u, err := url.Parse(ep); err == nil && u.Scheme != "" {
		switch u.Scheme {
		case "unixs":
			network, host = "unix", u.Host+u.Path
		case "https":
			host = u.Host
		default:
			return nil // plaintext: nothing to check
		}
	}
	cfg := base.Clone()
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" && network == "tcp" {
		if h, _, err := net.SplitHostPort(host); err == nil {
			cfg.ServerName = h
		}
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	conn, err := d.DialContext(ctx, network, host)
	if err != nil {
		var certErr *tls.CertificateVerificationError
		var unknownAuth x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		switch {
		case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
			return fmt.Errorf("etcd %s: its server certificate is not trusted (%s): %w", ep, caHint(c), err)
		case isRemoteTLSAlert(err):
			return clientCertRefused(ep, c, err)
		}
		return fmt.Errorf("%w: %v", errUnreachable, err)
	}
	defer conn.Close()
	// TLS 1.3: the server checks our certificate after our side of the
	// handshake is done, and its verdict comes with the first read. An
	// HTTP/2 server (etcd's) sends its SETTINGS at once when it accepts us.
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil && isRemoteTLSAlert(err) {
		return clientCertRefused(ep, c, err)
	}
	return nil
}

func isRemoteTLSAlert(err error) bool {
	return err != nil && strings.Contains(err.Error(), "remote error: tls:")
}

func clientCertRefused(ep string, c Config, err error) error {
	hint := "no client certificate given: set --etcd-cert and --etcd-key"
	if c.CertFile != "" {
		hint = "--etcd-cert " + c.CertFile
	}
	return fmt.Errorf("etcd %s refused the client certificate (%s; it must be signed by the CA etcd trusts and be valid for client authentication): %w", ep, hint, err)
}

func caHint(c Config) string {
	if c.CAFile == "" {
		return "no --etcd-ca given, so only the system's roots are trusted"
	}
	return "checked against --etcd-ca " + c.CAFile
}
