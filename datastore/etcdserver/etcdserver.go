// Package etcdserver runs a single-member etcd inside the process, for
// `calyx-agent --embedded-etcd DIR`, the lab and the tests. Tick and election
// times are small so that it is ready in tens of milliseconds.
package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Options configure the embedded etcd.
type Options struct {
	// Dir holds etcd's data; it survives restarts.
	Dir string
	// ClientURL is where clients connect (default http://127.0.0.1:2379).
	// Port 0 picks a free port.
	ClientURL string
	// PeerURL is the raft peer URL (default a free port on 127.0.0.1).
	PeerURL string
	// Name of the member (default "calyx").
	Name string
	// NoFsync trades durability for speed; only for tests.
	NoFsync bool
	// StartTimeout bounds the wait for the member to be ready (default 30 s).
	StartTimeout time.Duration
	// CertFile, KeyFile and CAFile make etcd serve TLS and accept only
	// clients with a certificate signed by the CA (all three or none; the
	// URLs must then be https). The peer port gets the same, so that no
	// local process can speak raft to the member either.
	CertFile, KeyFile, CAFile string
}

// TLS reports whether o asks for TLS.
func (o Options) TLS() bool { return o.CertFile != "" || o.KeyFile != "" || o.CAFile != "" }

func (o Options) checkTLS(clientURL, peerURL *url.URL) error {
	if !o.TLS() {
		if clientURL.Scheme == "https" {
			return fmt.Errorf("client URL %s is https but no certificate was given (--embedded-etcd-cert, --embedded-etcd-key, --embedded-etcd-ca)", clientURL)
		}
		return nil
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"--embedded-etcd-cert", o.CertFile}, {"--embedded-etcd-key", o.KeyFile}, {"--embedded-etcd-ca", o.CAFile}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("TLS needs a certificate, its key and the CA that signs client certificates: %v missing", missing)
	}
	for _, u := range []*url.URL{clientURL, peerURL} {
		if u.Scheme != "https" {
			return fmt.Errorf("%s: with TLS certificates the URL must be https://, not %s:// (the certificates would not be used)", u, u.Scheme)
		}
	}
	return nil
}

// Server is a running embedded etcd.
type Server struct {
	etcd      *embed.Etcd
	endpoint  string
	closeOnce sync.Once
}

// Start runs etcd and waits until it serves clients.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, errors.New("embedded etcd: a data directory is required")
	}
	if o.Name == "" {
		o.Name = "calyx"
	}
	if o.ClientURL == "" {
		o.ClientURL = "http://127.0.0.1:2379"
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	clientURL, err := freePortURL(o.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: client URL: %w", err)
	}
	peer := o.PeerURL
	if peer == "" {
		peer = "http://127.0.0.1:0"
		if o.TLS() {
			peer = "https://127.0.0.1:0"
		}
	}
	peerURL, err := freePortURL(peer)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: peer URL: %w", err)
	}
	if err := o.checkTLS(clientURL, peerURL); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.Dir
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", o.Name, peerURL.String())
	// One member: tiny ticks make the election near instant.
	cfg.TickMs = 10
	cfg.ElectionMs = 50
	cfg.UnsafeNoFsync = o.NoFsync
	cfg.MaxTxnOps = 1024
	cfg.AutoCompactionMode = "revision"
	cfg.AutoCompactionRetention = "10000"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietZap())
	cfg.EnableGRPCGateway = false
	if o.TLS() {
		info := transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.CAFile, ClientCertAuth: true}
		cfg.ClientTLSInfo = info
		cfg.PeerTLSInfo = info
	}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd in %s: %w", o.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(o.StartTimeout):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready after %s", o.Dir, o.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	endpoint := clientURL.String()
	if len(e.Clients) > 0 {
		endpoint = clientURL.Scheme + "://" + e.Clients[0].Addr().String()
	}
	return &Server{etcd: e, endpoint: endpoint}, nil
}

// Endpoint is the client URL, with the real port when 0 was asked for.
func (s *Server) Endpoint() string { return s.endpoint }

// Close stops etcd; calling it again does nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
	})
}

// freePortURL parses u and, if its port is 0, picks a free one (etcd needs
// the real port in its advertised URLs).
func freePortURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Port() != "0" {
		return u, nil
	}
	l, err := net.Listen("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	u.Host = addr
	return u, nil
}

// quietZap keeps etcd's own log to what cannot be seen otherwise: a start
// failure comes back from Start, and etcd logs routine shutdown and
// single-member storage-version messages at error level.
func quietZap() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zapcore.DPanicLevel)
	cfg.Sampling = nil
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
