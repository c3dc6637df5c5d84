package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calyx-net/calyx/datastore"
)

const procEtcd = "etcd"

// startEtcd runs the etcd binary in its own namespace on the fabric, with
// its data in the lab directory, and waits until it answers.
func (l *Lab) startEtcd(ctx context.Context) error {
	if err := l.plug(ctx, l.names.etcd(), "etcd", EtcdIP, ""); err != nil {
		return err
	}
	return l.launchEtcd(ctx)
}

// StopEtcd stops etcd (SIGTERM), as an outage would; its data stays.
func (l *Lab) StopEtcd() error {
	return l.locked(context.Background(), func() error {
		p, ok := l.st.proc(procEtcd)
		if !ok {
			return nil
		}
		if err := stopProc(*p, 10*time.Second); err != nil {
			return err
		}
		l.st.removeProc(p.Name)
		return l.save()
	})
}

// StartEtcd starts a stopped etcd again on its data and waits for it.
func (l *Lab) StartEtcd(ctx context.Context) error {
	return l.locked(ctx, func() error { return l.launchEtcd(ctx) })
}

// launchEtcd runs etcd in its (already plugged) namespace.
func (l *Lab) launchEtcd(ctx context.Context) error {
	ns := l.names.etcd()
	bin, err := lookTool("etcd")
	if err != nil {
		return err
	}
	data := etcdDataDir(l.dir)
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("etcd data directory: %w", err)
	}
	server := clientFiles(l.dir, etcdServerID)
	// One member, peer traffic on loopback; short ticks make the first
	// election quick. Clients need TLS and a certificate from the lab's CA.
	argv := []string{bin,
		"--name", "lab",
		"--data-dir", data,
		"--listen-client-urls", EtcdEndpoint,
		"--advertise-client-urls", EtcdEndpoint,
		"--cert-file", server.Cert, "--key-file", server.Key,
		"--trusted-ca-file", server.CA, "--client-cert-auth",
		// Metrics (no data) in plaintext, on the etcd namespace's loopback.
		"--listen-metrics-urls", "http://" + EtcdMetricsAddr,
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "lab=http://127.0.0.1:2380",
		"--initial-cluster-state", "new",
		"--heartbeat-interval", "20",
		"--election-timeout", "200",
		// Keep history bounded, as any long-running etcd must be: churn
		// writes ~2 revisions per CNI ADD/DEL.
		"--auto-compaction-mode", "revision",
		"--auto-compaction-retention", "10000",
		"--log-level", "warn",
		"--logger", "zap",
	}
	if err := l.startProc(procEtcd, ns, argv, filepath.Join(logDir(l.dir), "etcd.log"), nil); err != nil {
		return err
	}
	return l.waitEtcd(ctx)
}

// waitEtcd polls etcd until a read succeeds, failing early if it died.
func (l *Lab) waitEtcd(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, l.opts.StepTimeout)
	defer cancel()
	// Wait for the port first: a gRPC client whose first connection is
	// refused backs off for a second before it tries again.
	dial := dialerIn(l.names.fabric())
	for {
		p, _ := l.st.proc(procEtcd)
		if p != nil && !p.alive() {
			return errProcDied(*p)
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		c, err := dial(attempt, EtcdEndpoint)
		cancelAttempt()
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			return waitFailed(parent, "etcd to listen on "+EtcdEndpoint, l.opts.StepTimeout, err, "log: "+filepath.Join(logDir(l.dir), "etcd.log"))
		case <-time.After(20 * time.Millisecond):
		}
	}
	ds, err := l.Datastore()
	if err != nil {
		return err
	}
	for {
		p, _ := l.st.proc(procEtcd)
		if p != nil && !p.alive() {
			return errProcDied(*p)
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		_, err := ds.Etcd().Get(attempt, "/calyx-lab/ping")
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return waitFailed(parent, "etcd to answer on "+EtcdEndpoint, l.opts.StepTimeout, err, "log: "+filepath.Join(logDir(l.dir), "etcd.log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Datastore is a Calyx datastore client on the lab's etcd. Its connections
// start inside the fabric namespace, so it works from the root namespace.
// The Lab owns it and closes it on Down.
func (l *Lab) Datastore() (*datastore.Client, error) {
	l.dsMu.Lock()
	defer l.dsMu.Unlock()
	if l.ds != nil {
		return l.ds, nil
	}
	tlsCfg, err := etcdTLS(l.dir, AdminIdentity)
	if err != nil {
		return nil, fmt.Errorf("the lab's etcd certificate: %w", err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{EtcdEndpoint},
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialerIn(l.names.fabric()))},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", EtcdEndpoint, err)
	}
	l.ds = datastore.NewClientFromEtcd(c)
	l.etcdClient = c
	return l.ds, nil
}
