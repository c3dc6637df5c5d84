// Package agent wires calyx-agent: configuration, start and stop, the
// calculation from the datastore to each dataplane part's desired state,
// the gRPC server for the CNI plugin and calyxctl, health and metrics.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/calyx-net/calyx/bgp"
	apipb "github.com/calyx-net/calyx/cni/api"
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
	ipam    *ipam.IPAM
	plumber *veth.Plumber
	local   *routes.Table // workload routes and block blackholes
	learned *routes.Table // routes learned over BGP
	sysctls *routes.Sysctls
	policy  *policy.Dataplane
	speaker bgp.Speaker
	metrics *metrics

	// mu guards the cluster state, the local endpoint overlay, the learned
	// paths and the last values handed to the speaker.
	mu           sync.Mutex
	state        *clusterState
	pendingAdd   map[string]*datastore.WorkloadEndpoint // written by CNI ADD, not yet seen by the syncer
	pendingDel   map[string]bool                        // deleted by CNI DEL, not yet seen by the syncer
	learnedPaths map[netip.Prefix][]netip.Addr
	learnedSync  learnedSync // which learned prefixes the table has yet to hear of
	lastPeers    []bgp.Peer
	// keptLearned are the routes learned before a restart, kept in the
	// kernel until BGP's initial sync (End-of-RIB) and then swept.
	keptLearned map[netip.Prefix][]netip.Addr
	bgpStarted  bool

	synced   chan struct{} // closed at the first datastore in-sync
	kick     chan struct{}
	stopping chan struct{}
}

// Run starts the agent and blocks until ctx ends, then stops it, leaving
// the dataplane (routes, chains, BGP routes at the peers) in place.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	a := &Agent{
		cfg: cfg, log: log, node: cfg.NodeName, startedAt: time.Now(),
		state: newClusterState(), pendingAdd: map[string]*datastore.WorkloadEndpoint{}, pendingDel: map[string]bool{},
		learnedPaths: map[netip.Prefix][]netip.Addr{},
		synced:       make(chan struct{}), kick: make(chan struct{}, 1), stopping: make(chan struct{}),
	}
	defer a.closeDatastore()
	if err := a.startDatastore(ctx); err != nil {
		return err
	}
	if err := a.startDataplane(); err != nil {
		return err
	}
	a.metrics = newMetrics(a)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				a.log.Error("component stopped", "component", name, "err", err)
			}
		}()
	}

	grpcServer, err := a.serveAPI()
	if err != nil {
		return err
	}
	if err := serveHealth(runCtx, cfg.HealthAddr, a.readiness(), a.log); err != nil {
		return err
	}
	if err := serveMetrics(runCtx, cfg.MetricsAddr, a.metrics.registry, a.log); err != nil {
		return err
	}

	syncer := datastore.NewSyncer(a.client.Etcd(), []datastore.Source{datastore.ResourceSource(), ipam.BlockSource()}, a.log.With("component", "syncer"))
	goRun("syncer", func(ctx context.Context) error { return syncer.Run(ctx, a.onSyncerEvents) })
	goRun("dataplane", a.dataplaneLoop)
	if cfg.IPAMGCInterval > 0 {
		goRun("ipam-gc", func(ctx context.Context) error {
			a.ipam.RunGC(ctx, a.node, cfg.IPAMGCInterval, cfg.IPAMGCGrace)
			return nil
		})
	}

	a.log.Info("calyx-agent started", "node", a.node, "address", a.nodeIP, "socket", cfg.AgentSocket)
	<-ctx.Done()
	a.log.Info("stopping: routes, chains and BGP routes at the peers stay in place")
	close(a.stopping)
	grpcServer.Stop()
	cancel()
	wg.Wait()
	if a.speaker != nil {
		a.mu.Lock()
		started := a.bgpStarted
		a.mu.Unlock()
		if started {
			// No Cease: peers keep our routes for the graceful-restart time.
			a.speaker.Close(true)
		}
	}
	a.local.Close()
	a.learned.Close()
	return nil
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
		_, err = registerNode(rctx, c, a.node, a.nodeIP, a.nodeIP6, a.cfg.ASNumber)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		var ve *datastore.ValidationError
		if errors.As(err, &ve) {
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
	a.local, err = routes.New(routes.Options{Protocol: routes.ProtoWorkload, Logger: a.log.With("component", "routes"), ResyncInterval: a.cfg.ResyncInterval})
	if err != nil {
		return err
	}
	a.learned, err = routes.New(routes.Options{Protocol: routes.ProtoBGP, Logger: a.log.With("component", "bgp-routes"), ResyncInterval: a.cfg.ResyncInterval})
	if err != nil {
		return err
	}
	ipv6 := a.nodeIP6.IsValid()
	// Sysctl changes by hand send no event: check them more often than the
	// full resync.
	a.sysctls = routes.NewSysctls(routes.SysctlOptions{IPv6: ipv6, Logger: a.log.With("component", "sysctls"), ResyncInterval: min(a.cfg.ResyncInterval, 10*time.Second)})
	// Non-nil: an empty list means none, not policy's default.
	failsafe := append([]policy.ProtoPort{}, a.cfg.FailsafePorts...)
	a.policy, err = policy.New(policy.Config{NodeName: a.node, IPv6: ipv6, Backend: a.cfg.IptablesBackend, FailsafeInbound: failsafe, ResyncInterval: a.cfg.ResyncInterval}, a.log.With("component", "policy"))
	if err != nil {
		return err
	}
	a.speaker = bgp.NewGoBGP(a.log.With("component", "bgp"))
	return nil
}

// serveAPI listens on the agent socket (root only) for the CNI plugin and
// calyxctl.
func (a *Agent) serveAPI() (*grpc.Server, error) {
	l, err := server.Listen(a.cfg.AgentSocket)
	if err != nil {
		return nil, fmt.Errorf("--agent-socket %s: %w", a.cfg.AgentSocket, err)
	}
	s := grpc.NewServer(server.ServerOptions()...)
	apipb.RegisterCNIServer(s, &cniServer{a: a})
	apipb.RegisterAgentServer(s, &statusServer{a: a})
	go s.Serve(l)
	return s, nil
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
			if !a.client.Reachable() {
				return false, "etcd unreachable (the dataplane stays as it is; CNI ADD answers try again later)"
			}
			return true, ""
		},
		"policy": func() (bool, string) {
			if err := a.policy.Ready(); err != nil {
				return false, err.Error()
			}
			return true, ""
		},
	}
}
