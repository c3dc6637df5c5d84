// Package agent wires calyx-agent: configuration, start and stop, the
// calculation from the datastore to each dataplane part's desired state,
// the gRPC server for the CNI plugin and calyxctl, health and metrics.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"

	"github.com/calyx-net/calyx/bgp"
	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/plugin"
	"github.com/calyx-net/calyx/cni/relay"
	"github.com/calyx-net/calyx/cni/server"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdserver"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/policy"
	"github.com/calyx-net/calyx/routes"
	"github.com/calyx-net/calyx/routes/veth"
)

// Agent is one running calyx-agent.
type Agent struct {
	cfg       *Config
	log       *slog.Logger
	node      string
	nodeIP    netip.Addr
	nodeIP6   netip.Addr
	startedAt time.Time

	etcd    *etcdserver.Server // embedded etcd, when --embedded-etcd
	client  *datastore.Client
	syncer  *datastore.Syncer // set before any loop starts
	ipam    *ipam.IPAM
	plumber *veth.Plumber
	local   *routes.Table // workload routes and block blackholes
	learned *routes.Table // routes learned over BGP
	sysctls *routes.Sysctls
	policy  *policy.Dataplane
	speaker bgp.Speaker
	metrics *metrics
	kube    kubernetes.Interface // nil outside Kubernetes

	// mu guards the cluster state, the local endpoint overlay, the learned
	// paths and the last values handed to the speaker.
	mu           sync.Mutex
	state        *clusterState
	pendingAdd   map[string]*datastore.WorkloadEndpoint // written by CNI ADD, not yet seen by the syncer
	pendingDel   map[string]bool                        // deleted by CNI DEL, not yet seen by the syncer
	refused      map[string]string                      // "Policy/name" -> why the policy dataplane refused it (input.go)
	learnedPaths *learnedPaths
	learnedSync  learnedSync // which learned prefixes the table has yet to hear of
	lastPeers    []bgp.Peer
	lastPolicy   bgp.Policy
	policySent   bool
	// keptLearned are the routes learned before a restart, kept in the
	// kernel until BGP's initial sync (End-of-RIB) and then swept.
	keptLearned map[netip.Prefix][]netip.Addr
	bgpStarted  bool

	synced chan struct{} // closed at the first datastore in-sync
	kick   chan struct{}

	opts   options
	group  *group // every loop the agent runs
	notify *notifier
}

// Option changes how Run starts the agent. The shipped binary passes only
// WithLogLevel; the others are hooks for tests.
type Option func(*options)

type options struct {
	level *slog.LevelVar
	// fault, when set, may fail a CNI ADD after a named step.
	fault func(step string) error
	// beatHook runs at each idle beat of the dataplane loop.
	beatHook func(ctx context.Context)
	// dataplaneStall replaces the dataplane loop's stall deadline.
	dataplaneStall time.Duration
}

// WithLogLevel gives the agent the level its logger uses, so that calyxctl
// agent log-level can change it at runtime.
func WithLogLevel(l *slog.LevelVar) Option { return func(o *options) { o.level = l } }

// WithFaults makes every CNI ADD call fault after each step
// (ipam-allocated, veth-created, veth-configured, dataplane-programmed)
// and in place of its etcd writes (ipam-commit, endpoint-write); a non-nil
// error fails the ADD there, and every step taken is undone. For tests.
func WithFaults(fault func(step string) error) Option { return func(o *options) { o.fault = fault } }

// WithDataplaneBeatHook runs hook at each idle beat of the dataplane
// loop; a hook that blocks stalls the loop. For tests.
func WithDataplaneBeatHook(hook func(ctx context.Context)) Option {
	return func(o *options) { o.beatHook = hook }
}

// WithDataplaneStall sets the dataplane loop's stall deadline (and beats
// it four times as often), so that a test sees a stall quickly.
func WithDataplaneStall(d time.Duration) Option { return func(o *options) { o.dataplaneStall = d } }

// Stall deadlines: how long each loop may go without a heartbeat before
// /livez fails and the watchdog stops being fed.
const (
	// dataplaneBeat is how often the idle dataplane loop beats.
	dataplaneBeat = 5 * time.Second
	// dataplaneStall covers the first programming of a large node.
	dataplaneStall = 2 * time.Minute
)

// partStall is the deadline of a dataplane part's loop (route tables,
// sysctls, policy): each turns at least once per resync interval.
func partStall(resync time.Duration) time.Duration { return 2*resync + time.Minute }

// Run starts the agent and blocks until ctx ends, then stops it, leaving
// the dataplane (routes, chains, BGP routes at the peers) in place. Every
// goroutine it starts belongs to one group, stopped in reverse order of
// start before the datastore, route tables and speaker are closed.
func Run(ctx context.Context, cfg *Config, log *slog.Logger, opts ...Option) error {
	a := &Agent{
		cfg: cfg, log: log, node: cfg.NodeName, startedAt: time.Now(),
		state: newClusterState(cfg.NodeName), pendingAdd: map[string]*datastore.WorkloadEndpoint{}, pendingDel: map[string]bool{}, refused: map[string]string{},
		learnedPaths: newLearnedPaths(nil),
		synced:       make(chan struct{}), kick: make(chan struct{}, 1),
	}
	a.opts.dataplaneStall = dataplaneStall
	for _, o := range opts {
		o(&a.opts)
	}
	// The loops' contexts do not end with ctx: the group ends them one by
	// one, in reverse order.
	a.group = newGroup(context.WithoutCancel(ctx), log)
	defer a.group.stop()
	a.notify = newNotifier(log)
	if every := watchdogInterval() / 2; every > 0 {
		a.group.Go("watchdog", 0, func(ctx context.Context) error {
			return a.notify.watchdog(ctx, every, a.group.problems, a.readyStatus)
		})
	}
	a.notify.setStatus("registering node " + a.node + " with the datastore")
	a.group.OnStop("datastore", a.closeDatastore)
	kc, err := kubeClient(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	a.kube = kc
	if err := a.startDatastore(ctx); err != nil {
		return err
	}
	a.syncer = datastore.NewSyncer(a.client.Etcd(), []datastore.Source{agentResourceSource(), ipam.NodeBlockSource(a.node)}, a.log.With("component", "syncer"))
	// Before the dataplane: its parts report each apply to the metrics.
	a.metrics = newMetrics(a)
	if err := a.startDataplane(); err != nil {
		return err
	}
	a.group.OnStop("route tables", func() {
		a.local.Close()
		a.learned.Close()
	})
	a.group.OnStop("BGP speaker", a.closeSpeaker)

	if err := a.goHTTP("health", cfg.HealthAddr, healthHandler(a.group.problems, a.readiness())); err != nil {
		return err
	}
	if err := a.goHTTP("metrics", cfg.MetricsAddr, metricsHandler(a.metrics.registry)); err != nil {
		return err
	}
	if err := a.goHTTP("pprof", cfg.PprofAddr, pprofHandler()); err != nil {
		return err
	}
	a.group.Go("syncer", 0, func(ctx context.Context) error { return a.syncer.Run(ctx, a.onSyncerEvents) })
	serveAPI, err := a.listenAPI()
	if err != nil {
		return err
	}
	a.group.Go("api", 0, serveAPI)
	a.group.Go("dataplane", a.opts.dataplaneStall, a.dataplaneLoop)
	if cfg.IPAMGCInterval > 0 {
		a.group.Go("ipam-gc", 0, func(ctx context.Context) error {
			a.ipam.RunGC(ctx, a.node, cfg.IPAMGCInterval, cfg.IPAMGCGrace)
			return ctx.Err()
		})
	}

	a.log.Info("calyx-agent started", "node", a.node, "address", a.nodeIP, "socket", cfg.AgentSocket)
	<-ctx.Done()
	a.log.Info("stopping: routes, chains and BGP routes at the peers stay in place")
	a.notify.stopping()
	return nil
}

// goHTTP serves h on addr (nothing when addr is empty) as a loop.
func (a *Agent) goHTTP(what, addr string, h http.Handler) error {
	serve, err := listenHTTP(addr, h, what)
	if err != nil || serve == nil {
		return err
	}
	a.group.Go(what+" server", 0, serve)
	return nil
}

// closeSpeaker closes BGP without a Cease: peers keep our routes for the
// graceful-restart time.
func (a *Agent) closeSpeaker() {
	a.mu.Lock()
	started := a.bgpStarted
	a.mu.Unlock()
	if started {
		a.speaker.Close(true)
	}
}

// startDatastore starts the embedded etcd if asked, connects, and registers
// this node.
func (a *Agent) startDatastore(ctx context.Context) error {
	endpoints := a.cfg.EtcdEndpoints
	if a.cfg.EmbeddedEtcd != "" {
		if err := os.MkdirAll(a.cfg.EmbeddedEtcd, 0o700); err != nil {
			return fmt.Errorf("--embedded-etcd: %w", err)
		}
		s, err := etcdserver.Start(ctx, etcdserver.Options{Dir: a.cfg.EmbeddedEtcd, ClientURL: a.cfg.EmbeddedEtcdListen, Name: a.node})
		if err != nil {
			return err
		}
		a.etcd = s
		endpoints = []string{s.Endpoint()}
		a.log.Info("embedded etcd running", "endpoint", s.Endpoint(), "dir", a.cfg.EmbeddedEtcd)
	}
	c, err := datastore.NewClient(datastore.Config{Endpoints: endpoints, CAFile: a.cfg.EtcdCA, CertFile: a.cfg.EtcdCert, KeyFile: a.cfg.EtcdKey})
	if err != nil {
		return err
	}
	a.client = c

	a.nodeIP, a.nodeIP6 = a.cfg.NodeIP, a.cfg.NodeIPv6
	if !a.nodeIP.IsValid() {
		if a.nodeIP, err = detectNodeIP(); err != nil {
			return err
		}
	}
	// etcd may still be coming up (it starts with the host): retry for a
	// while before giving up, so that the service manager's restart is the
	// last resort, not the first.
	deadline := time.Now().Add(60 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = registerNode(rctx, c, nodeRegistration{name: a.node, addr: a.nodeIP, addr6: a.nodeIP6, asn: a.cfg.ASNumber, labels: a.nodeLabels(), takeover: a.cfg.TakeoverNode})
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		var ve *datastore.ValidationError
		if errors.As(err, &ve) || errors.Is(err, errNodeTaken) {
			break
		}
		a.log.Warn("registering the node failed; retrying", "err", err)
		time.Sleep(time.Second)
	}
	if err != nil {
		return fmt.Errorf("registering node %q: %w", a.node, err)
	}
	a.ipam = ipam.New(c, a.log.With("component", "ipam"))
	return nil
}

func (a *Agent) closeDatastore() {
	if a.client != nil {
		a.client.Close()
	}
	if a.etcd != nil {
		a.etcd.Close()
	}
}

// startDataplane creates the parts; none writes to the kernel until the
// datastore is in sync.
func (a *Agent) startDataplane() error {
	var err error
	a.plumber = veth.New(veth.Options{Logger: a.log.With("component", "veth")})
	a.local, err = routes.New(routes.Options{Protocol: routes.ProtoWorkload, Logger: a.log.With("component", "routes"), ResyncInterval: a.cfg.ResyncInterval, OnApply: a.metrics.applyObserver("routes")})
	if err != nil {
		return err
	}
	a.learned, err = routes.New(routes.Options{Protocol: routes.ProtoBGP, Logger: a.log.With("component", "bgp-routes"), ResyncInterval: a.cfg.ResyncInterval, OnApply: a.metrics.applyObserver("routes")})
	if err != nil {
		return err
	}
	ipv6 := a.nodeIP6.IsValid()
	// Sysctl changes by hand send no event: check them more often than the
	// full resync.
	a.sysctls = routes.NewSysctls(routes.SysctlOptions{IPv6: ipv6, Logger: a.log.With("component", "sysctls"), ResyncInterval: min(a.cfg.ResyncInterval, 10*time.Second)})
	// Non-nil: an empty list means none, not policy's default.
	failsafe := append([]policy.ProtoPort{}, a.cfg.FailsafePorts...)
	a.policy, err = policy.New(policy.Config{NodeName: a.node, IPv6: ipv6, Backend: a.cfg.IptablesBackend, FailsafeInbound: failsafe, EndpointToHost: a.cfg.EndpointToHost, ResyncInterval: a.cfg.ResyncInterval, OnApply: a.metrics.applyObserver("policy")}, a.log.With("component", "policy"))
	if err != nil {
		return err
	}
	a.speaker = bgp.NewGoBGP(a.log.With("component", "bgp"))
	return nil
}

// listenAPI listens on the agent socket (root only) for the CNI plugin and
// calyxctl, and returns the loop that serves it until its context ends.
func (a *Agent) listenAPI() (func(context.Context) error, error) {
	l, err := server.Listen(a.cfg.AgentSocket)
	if err != nil {
		return nil, fmt.Errorf("--agent-socket %s: %w", a.cfg.AgentSocket, err)
	}
	cni := &cniServer{a: a}
	s := grpc.NewServer(server.ServerOptions()...)
	apipb.RegisterCNIServer(s, cni)
	apipb.RegisterAgentServer(s, &statusServer{a: a})
	// The calyx binary relays its invocations; the CNI protocol runs here.
	proto := plugin.New(cni, a.log.With("component", "cni"))
	mux := server.NewMux(s, func(ctx context.Context, caller server.PeerCred, req *relay.Request) *relay.Reply {
		return proto.Serve(ctx, plugin.Caller{PID: caller.PID}, req)
	}, a.log.With("component", "agent-socket"))
	return func(ctx context.Context) error {
		return serveUntil(ctx, func() error { return mux.Serve(l) }, mux.Stop, nil)
	}, nil
}

// isSynced reports whether the first datastore in-sync has happened.
func (a *Agent) isSynced() bool {
	select {
	case <-a.synced:
		return true
	default:
		return false
	}
}

func (a *Agent) readiness() map[string]readiness {
	return map[string]readiness{
		"datastore": func() (bool, string) {
			if !a.isSynced() {
				return false, "not in sync yet"
			}
			if !a.datastoreUp() {
				return false, "etcd unreachable or without quorum (the dataplane stays as it is; CNI ADD answers try again later)"
			}
			return true, ""
		},
		"policy": func() (bool, string) {
			if err := a.policy.Ready(); err != nil {
				return false, err.Error()
			}
			return true, ""
		},
		"input": a.inputReadiness,
	}
}
