package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calyx-net/calyx/datastore"
)

// The lab's etcd: one member (the default) or a Raft cluster of 3 or 5
// (Options.EtcdMembers), each member in a namespace of its own on the
// fabric, serving clients over TLS with client certificates; the members of
// a cluster talk to each other over TLS too (peer certificates from the
// lab's CA). Every client (agents, calyxctl, the lab itself, the kube
// controllers) gets every member's endpoint.

// MaxEtcdMembers is the largest etcd cluster a lab runs.
const MaxEtcdMembers = 5

// EtcdMember is one member of the lab's etcd cluster.
type EtcdMember struct {
	// Name is the member's and its process's name: etcd1, etcd2, ...
	Name  string `json:"name"`
	Index int    `json:"index"`
	IP    string `json:"ip"`
	Netns string `json:"netns"`
	// Endpoint is its client URL (https).
	Endpoint string `json:"endpoint"`
}

// EtcdMemberName names member i (1-based).
func EtcdMemberName(i int) string { return "etcd" + strconv.Itoa(i) }

// EtcdMemberIP is member i's fabric address: member 1 is EtcdIP, the
// others count down from it (198.18.0.249, .248, ...), above every host.
func EtcdMemberIP(i int) string { return "198.18.0." + strconv.Itoa(250-(i-1)) }

func etcdMemberEndpoint(i int) string {
	return "https://" + EtcdMemberIP(i) + ":" + strconv.Itoa(EtcdPort)
}

func etcdPeerURL(o Options, i int) string {
	if o.EtcdMembers == 1 {
		return "http://127.0.0.1:2380" // no peer traffic leaves the namespace
	}
	return "https://" + EtcdMemberIP(i) + ":2380"
}

// etcdEndpoints are the client URLs of every member, member 1 first.
func etcdEndpoints(o Options) []string {
	out := make([]string, 0, o.EtcdMembers)
	for i := 1; i <= o.EtcdMembers; i++ {
		out = append(out, etcdMemberEndpoint(i))
	}
	return out
}

// EtcdEndpoints are the client URLs of every etcd member: what
// --etcd-endpoints (and kube-apiserver's --etcd-servers) should get.
func (l *Lab) EtcdEndpoints() []string { return etcdEndpoints(l.opts) }

// EtcdMembers lists the members of the lab's etcd cluster.
func (l *Lab) EtcdMembers() []EtcdMember {
	out := make([]EtcdMember, 0, l.opts.EtcdMembers)
	for i := 1; i <= l.opts.EtcdMembers; i++ {
		out = append(out, l.etcdMember(i))
	}
	return out
}

func (l *Lab) etcdMember(i int) EtcdMember {
	return EtcdMember{Name: EtcdMemberName(i), Index: i, IP: EtcdMemberIP(i), Netns: l.names.etcdMember(i), Endpoint: etcdMemberEndpoint(i)}
}

// memberByName finds a member by its name ("etcd2").
func (l *Lab) memberByName(name string) (EtcdMember, error) {
	if rest, ok := strings.CutPrefix(name, "etcd"); ok {
		if i, err := strconv.Atoi(rest); err == nil && i >= 1 && i <= l.opts.EtcdMembers && strconv.Itoa(i) == rest {
			return l.etcdMember(i), nil
		}
	}
	return EtcdMember{}, fmt.Errorf("no etcd member %q in this lab (members: etcd1..etcd%d)", name, l.opts.EtcdMembers)
}

func etcdLogPath(dir, member string) string { return filepath.Join(logDir(dir), member+".log") }

// startEtcd plugs every member's namespace into the fabric, starts the
// members together (a cluster member waits for its peers) and waits until
// the cluster answers.
func (l *Lab) startEtcd(ctx context.Context) error {
	for _, m := range l.EtcdMembers() {
		if err := l.plug(ctx, m.Netns, m.Name, m.IP, ""); err != nil {
			return err
		}
	}
	for _, m := range l.EtcdMembers() {
		if err := l.launchEtcdMember(m); err != nil {
			return err
		}
	}
	return l.waitEtcd(ctx)
}

// StopEtcd stops every etcd member (SIGTERM), as an outage would; the data
// stays.
func (l *Lab) StopEtcd() error {
	return l.locked(context.Background(), func() error {
		var errs []error
		for _, m := range l.EtcdMembers() {
			errs = append(errs, l.stopEtcdMember(m, false))
		}
		return errors.Join(errs...)
	})
}

// StartEtcd starts the stopped members again on their data and waits until
// the cluster answers.
func (l *Lab) StartEtcd(ctx context.Context) error {
	return l.locked(ctx, func() error {
		for _, m := range l.EtcdMembers() {
			if p, ok := l.st.proc(m.Name); ok && p.alive() {
				continue
			}
			if err := l.launchEtcdMember(m); err != nil {
				return err
			}
		}
		return l.waitEtcd(ctx)
	})
}

// StopEtcdMember stops one member: SIGTERM, or SIGKILL (as a crash would)
// when kill is set. Its data stays.
func (l *Lab) StopEtcdMember(name string, kill bool) error {
	return l.locked(context.Background(), func() error {
		m, err := l.memberByName(name)
		if err != nil {
			return err
		}
		return l.stopEtcdMember(m, kill)
	})
}

func (l *Lab) stopEtcdMember(m EtcdMember, kill bool) error {
	p, ok := l.st.proc(m.Name)
	if !ok {
		return nil
	}
	if kill {
		signalGroup(p.PID, syscall.SIGKILL)
		if !waitGone(*p, 5*time.Second) {
			return fmt.Errorf("%s (pid %d) survived SIGKILL", m.Name, p.PID)
		}
	} else if err := stopProc(*p, 10*time.Second); err != nil {
		return err
	}
	l.st.removeProc(p.Name)
	return l.save()
}

// StartEtcdMember starts a stopped member on its data and waits until it
// has caught up with the cluster: it serves a linearizable read itself,
// which needs a leader and its log applied up to the cluster's commit.
func (l *Lab) StartEtcdMember(ctx context.Context, name string) error {
	return l.locked(ctx, func() error {
		m, err := l.memberByName(name)
		if err != nil {
			return err
		}
		if p, ok := l.st.proc(m.Name); ok && p.alive() {
			return fmt.Errorf("%s already runs (pid %d)", m.Name, p.PID)
		}
		if err := l.launchEtcdMember(m); err != nil {
			return err
		}
		return l.waitEtcdMember(ctx, m)
	})
}

// etcdArgv is member m's command line.
func (l *Lab) etcdArgv(bin string, m EtcdMember) []string {
	o := l.opts
	server := clientFiles(l.dir, etcdServerID)
	var cluster []string
	for i := 1; i <= o.EtcdMembers; i++ {
		cluster = append(cluster, EtcdMemberName(i)+"="+etcdPeerURL(o, i))
	}
	argv := []string{bin,
		"--name", m.Name,
		"--data-dir", filepath.Join(etcdDataDir(l.dir), m.Name),
		"--listen-client-urls", m.Endpoint,
		"--advertise-client-urls", m.Endpoint,
		"--cert-file", server.Cert, "--key-file", server.Key,
		"--trusted-ca-file", server.CA, "--client-cert-auth",
		// Metrics (no data) in plaintext, on the member namespace's loopback.
		"--listen-metrics-urls", "http://" + EtcdMetricsAddr,
		"--listen-peer-urls", etcdPeerURL(o, m.Index),
		"--initial-advertise-peer-urls", etcdPeerURL(o, m.Index),
		"--initial-cluster", strings.Join(cluster, ","),
		"--initial-cluster-state", "new",
		"--initial-cluster-token", strings.TrimSuffix(l.names.prefix, "-"),
		// Keep history bounded, as any long-running etcd must be: churn
		// writes ~2 revisions per CNI ADD/DEL.
		"--auto-compaction-mode", "revision",
		"--auto-compaction-retention", "10000",
		"--log-level", "warn",
		"--logger", "zap",
	}
	if o.EtcdMembers == 1 {
		// Short ticks make the first election quick.
		return append(argv, "--heartbeat-interval", "20", "--election-timeout", "200")
	}
	// A cluster: ticks that a loaded two-core machine keeps without
	// spurious elections, and a member lost is noticed within half a
	// second. Peers authenticate each other with the lab CA's certificates.
	return append(argv,
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--peer-cert-file", server.Cert, "--peer-key-file", server.Key,
		"--peer-trusted-ca-file", server.CA, "--peer-client-cert-auth",
	)
}

// launchEtcdMember runs member m in its (already plugged) namespace.
func (l *Lab) launchEtcdMember(m EtcdMember) error {
	bin, err := lookTool("etcd")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(etcdDataDir(l.dir), 0o700); err != nil {
		return fmt.Errorf("etcd data directory: %w", err)
	}
	return l.startProc(m.Name, m.Netns, l.etcdArgv(bin, m), etcdLogPath(l.dir, m.Name), nil)
}

// waitEtcd waits until every running member listens and the cluster
// answers a linearizable read, failing early if a member died.
func (l *Lab) waitEtcd(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, l.opts.StepTimeout)
	defer cancel()
	for _, m := range l.EtcdMembers() {
		if err := l.waitEtcdPort(ctx, parent, m); err != nil {
			return err
		}
	}
	ds, err := l.Datastore()
	if err != nil {
		return err
	}
	return l.pollEtcd(ctx, parent, "the etcd cluster", l.EtcdMembers(), func(ctx context.Context) error {
		_, err := ds.Etcd().Get(ctx, "/calyx-lab/ping")
		return err
	})
}

// waitEtcdMember waits until member m serves a linearizable read itself.
func (l *Lab) waitEtcdMember(parent context.Context, m EtcdMember) error {
	ctx, cancel := context.WithTimeout(parent, l.opts.StepTimeout)
	defer cancel()
	if err := l.waitEtcdPort(ctx, parent, m); err != nil {
		return err
	}
	c, err := l.etcdClientFor(m.Endpoint)
	if err != nil {
		return err
	}
	defer c.Close()
	return l.pollEtcd(ctx, parent, m.Name, []EtcdMember{m}, func(ctx context.Context) error {
		_, err := c.Get(ctx, "/calyx-lab/ping")
		return err
	})
}

// waitEtcdPort waits for member m's client port: a gRPC client whose first
// connection is refused backs off for a second before it tries again.
func (l *Lab) waitEtcdPort(ctx, parent context.Context, m EtcdMember) error {
	dial := dialerIn(l.names.fabric())
	for {
		if err := l.etcdDied(m); err != nil {
			return err
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		c, err := dial(attempt, m.Endpoint)
		cancelAttempt()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return waitFailed(parent, m.Name+" to listen on "+m.Endpoint, l.opts.StepTimeout, err, "log: "+etcdLogPath(l.dir, m.Name))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pollEtcd repeats read until it succeeds, failing early if one of the
// members died.
func (l *Lab) pollEtcd(ctx, parent context.Context, what string, members []EtcdMember, read func(context.Context) error) error {
	for {
		for _, m := range members {
			if err := l.etcdDied(m); err != nil {
				return err
			}
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		err := read(attempt)
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return waitFailed(parent, what+" to answer", l.opts.StepTimeout, err, "logs: "+filepath.Join(logDir(l.dir), "etcd*.log"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// etcdDied reports a recorded member process that exited.
func (l *Lab) etcdDied(m EtcdMember) error {
	if p, ok := l.st.proc(m.Name); ok && !p.alive() {
		return errProcDied(*p)
	}
	return nil
}

// etcdClientFor is an admin etcd client of the given endpoints whose
// connections start inside the fabric namespace, so that it works from
// the root namespace. The caller closes it.
func (l *Lab) etcdClientFor(endpoints ...string) (*clientv3.Client, error) {
	tlsCfg, err := etcdTLS(l.dir, AdminIdentity)
	if err != nil {
		return nil, fmt.Errorf("the lab's etcd certificate: %w", err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialerIn(l.names.fabric()))},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return c, nil
}

// Datastore is a Calyx datastore client on the lab's etcd (every member).
// Its connections start inside the fabric namespace, so it works from the
// root namespace. The Lab owns it and closes it on Down.
func (l *Lab) Datastore() (*datastore.Client, error) {
	l.dsMu.Lock()
	defer l.dsMu.Unlock()
	if l.ds != nil {
		return l.ds, nil
	}
	c, err := l.etcdClientFor(l.EtcdEndpoints()...)
	if err != nil {
		return nil, err
	}
	l.ds = datastore.NewClientFromEtcd(c)
	l.etcdClient = c
	return l.ds, nil
}

// EtcdMemberStatus is what one member says of itself.
type EtcdMemberStatus struct {
	EtcdMember
	// Up is false when the member did not answer (Err says why).
	Up  bool   `json:"up"`
	Err string `json:"error,omitempty"`
	// Leader is true for the member that leads the cluster.
	Leader bool `json:"leader,omitempty"`
	// Revision and RaftApplied are the member's own view: a member that
	// came back has caught up once they equal the leader's.
	Revision    int64  `json:"revision,omitempty"`
	RaftApplied uint64 `json:"raftApplied,omitempty"`
}

// EtcdStatus asks every member for its status, in member order.
func (l *Lab) EtcdStatus(ctx context.Context) []EtcdMemberStatus {
	var out []EtcdMemberStatus
	for _, m := range l.EtcdMembers() {
		st := EtcdMemberStatus{EtcdMember: m}
		c, err := l.etcdClientFor(m.Endpoint)
		if err == nil {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var resp *clientv3.StatusResponse
			resp, err = c.Status(sctx, m.Endpoint)
			cancel()
			c.Close()
			if err == nil {
				st.Up = true
				st.Leader = resp.Leader != 0 && resp.Leader == resp.Header.MemberId
				st.Revision, st.RaftApplied = resp.Header.Revision, resp.RaftAppliedIndex
			}
		}
		if err != nil {
			st.Err = err.Error()
		}
		out = append(out, st)
	}
	return out
}

// EtcdLeader is the name of the member that leads the cluster now.
func (l *Lab) EtcdLeader(ctx context.Context) (string, error) {
	sts := l.EtcdStatus(ctx)
	if i := slices.IndexFunc(sts, func(s EtcdMemberStatus) bool { return s.Leader }); i >= 0 {
		return sts[i].Name, nil
	}
	return "", errors.New("no etcd member says it leads")
}
