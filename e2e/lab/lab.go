package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/kubernetes"

	"github.com/calyx-net/calyx/datastore"
)

// testHookAfterStep lets tests crash or interrupt Up between two steps.
var testHookAfterStep func(step string)

// Lab is a running lab. Up makes one; Open attaches to one that a previous
// process made (the CLI). Its methods are safe for concurrent use.
type Lab struct {
	dir   string
	opts  Options // as Up got them, with defaults; immutable
	names names
	log   *slog.Logger

	mu sync.Mutex // guards st and children
	st State
	// children are the processes this Lab started, reaped when they exit
	// so that none lingers as a zombie of a long-running test binary.
	children map[int]*exec.Cmd
	steps    []StepReport // Up's, guarded by mu

	kubeMu sync.Mutex
	kube   kubernetes.Interface

	dsMu       sync.Mutex
	ds         *datastore.Client
	etcdClient *clientv3.Client

	downOnce sync.Once
	downErr  error
}

// Up builds a lab: fabric, etcd, the cluster resources, BIRD (optional),
// one agent per host and the requested workloads. When anything fails, or
// ctx is cancelled (Ctrl-C), it removes everything it made and returns the
// error.
func Up(ctx context.Context, o Options) (*Lab, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := CheckDeps(o); err != nil {
		return nil, err
	}
	l := &Lab{dir: o.Dir, opts: o, names: names{Prefix(o.Dir)}, log: o.Logger, children: map[int]*exec.Cmd{}}
	lockCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	lock, err := lockDir(lockCtx, l.dir)
	cancel()
	if err != nil {
		return nil, err
	}
	defer lock.unlock()
	if err := l.refuseExisting(ctx); err != nil {
		return nil, err
	}
	l.st = State{Version: stateVersion, Prefix: l.names.prefix, Created: time.Now().UTC(), Options: o}

	l.mu.Lock()
	err = l.build(ctx)
	l.mu.Unlock()
	if err != nil {
		l.log.Error("lab up failed; removing what was made", "err", err)
		if downErr := l.teardown(); downErr != nil {
			err = errors.Join(err, fmt.Errorf("and cleaning up: %w", downErr))
		}
		return nil, err
	}
	return l, nil
}

// refuseExisting fails when the directory holds a live lab or its leftovers.
func (l *Lab) refuseExisting(ctx context.Context) error {
	if _, err := os.Stat(statePath(l.dir)); err == nil {
		return fmt.Errorf("a lab already exists in %s: run `calyx-lab down --dir %s` first", l.dir, l.dir)
	}
	left, err := labNamespaces(ctx, l.names.prefix)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("namespaces of an earlier lab in %s are still there (%v): run `calyx-lab down --dir %s` first", l.dir, left, l.dir)
	}
	return nil
}

func (l *Lab) build(ctx context.Context) error {
	for _, d := range []string{logDir(l.dir), cniDir(l.dir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("lab directory: %w", err)
		}
	}
	if err := l.save(); err != nil {
		return err
	}
	step := func(what string, fn func() error) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted before %s: %w", what, err)
		}
		start, cpu := time.Now(), l.sampleCPU()
		if err := fn(); err != nil {
			return err
		}
		r := StepReport{Step: what, Took: time.Since(start), CPU: l.sampleCPU().since(cpu)}
		l.steps = append(l.steps, r)
		l.log.Info(what, "took", r.Took.Round(time.Millisecond), "cpu_s", fmtCPU(r.CPU))
		if testHookAfterStep != nil {
			testHookAfterStep(what)
		}
		return nil
	}
	if err := step("fabric", func() error { return l.buildFabric(ctx) }); err != nil {
		return err
	}
	if err := step("certificates", l.makePKI); err != nil {
		return err
	}
	if err := step("etcd", func() error { return l.startEtcd(ctx) }); err != nil {
		return err
	}
	if err := step("cluster resources", func() error { return l.writeClusterResources(ctx) }); err != nil {
		return err
	}
	if l.opts.Kubernetes {
		if err := step("Kubernetes API server and controllers", func() error { return l.startKube(ctx) }); err != nil {
			return err
		}
	}
	if err := step("hosts", func() error { return l.buildHosts(ctx) }); err != nil {
		return err
	}
	if l.opts.Peer == PeerBird {
		if err := step("BIRD top-of-rack", func() error { return l.startBird(ctx) }); err != nil {
			return err
		}
	}
	if !l.opts.SkipAgents {
		if err := step("agents", func() error { return l.startAgents(ctx) }); err != nil {
			return err
		}
		if l.opts.Reflectors > 0 {
			if err := step("route reflectors", func() error { return l.markReflectors(ctx) }); err != nil {
				return err
			}
		}
	}
	if err := step("workloads", func() error { return l.addInitialWorkloads(ctx) }); err != nil {
		return err
	}
	l.st.Ready = true
	return l.save()
}

func (l *Lab) buildHosts(ctx context.Context) error {
	for i := 1; i <= l.opts.Hosts; i++ {
		h := Host{
			Name: HostName(i), Index: i, IP: HostIP(i), IPv6: l.hostIPv6(i), Netns: l.names.host(i),
			AgentSocket: agentSocketPath(l.dir, i), AgentLog: agentLogPath(l.dir, i),
			Reflector: i <= l.opts.Reflectors,
		}
		l.st.Hosts = append(l.st.Hosts, h)
		if err := l.buildHost(ctx, i); err != nil {
			return err
		}
	}
	return l.save()
}

// startAgents starts every agent, then waits for each to be ready.
func (l *Lab) startAgents(ctx context.Context) error {
	for _, h := range l.st.Hosts {
		if err := os.MkdirAll(hostDir(l.dir, h.Index), 0o755); err != nil {
			return fmt.Errorf("host directory: %w", err)
		}
		if _, err := l.EtcdClientFiles(h.Name); err != nil {
			return err
		}
		_ = os.Remove(h.AgentSocket)
		if err := l.startProc(agentProcName(h.Name), h.Netns, AgentArgv(l.opts, h), h.AgentLog, nil); err != nil {
			return err
		}
	}
	for _, h := range l.st.Hosts {
		if err := l.waitAgentReady(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) addInitialWorkloads(ctx context.Context) error {
	var specs []workloadSpec
	for i := 1; i <= l.opts.Hosts; i++ {
		for w := 1; w <= l.opts.Workloads; w++ {
			specs = append(specs, workloadSpec{defaultWorkloadName(i, w), HostName(i), defaultWorkloadLabels(w)})
		}
	}
	if l.opts.Kubernetes && len(specs) > 0 {
		kc, err := l.KubeClient()
		if err != nil {
			return err
		}
		for _, s := range specs {
			if err := createPodObject(ctx, kc, Pod{Namespace: LabNamespace, Name: s.name, Host: s.host, Labels: s.labels}); err != nil {
				return err
			}
		}
	}
	return l.addWorkloads(ctx, specs)
}

// Open attaches to the lab in dir that an earlier process made.
func Open(dir string, logger *slog.Logger) (*Lab, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o, err := Options{Dir: dir}.withDefaults()
	if err != nil {
		return nil, err
	}
	st, err := loadState(o.Dir)
	if err != nil {
		return nil, err
	}
	opts := st.Options
	opts.Logger = logger
	if opts, err = opts.withDefaults(); err != nil {
		return nil, fmt.Errorf("lab state: %w", err)
	}
	return &Lab{dir: o.Dir, opts: opts, names: names{st.Prefix}, log: logger, st: *st, children: map[int]*exec.Cmd{}}, nil
}

// locked runs fn holding the Lab's mutex and the directory lock, with the
// state reloaded from disk first (another calyx-lab may have changed it).
func (l *Lab) locked(ctx context.Context, fn func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lockCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	lock, err := lockDir(lockCtx, l.dir)
	cancel()
	if err != nil {
		return err
	}
	defer lock.unlock()
	st, err := loadState(l.dir)
	if err != nil {
		return err
	}
	l.st = *st
	return fn()
}

// save writes the state; the caller holds l.mu.
func (l *Lab) save() error { return saveState(l.dir, &l.st) }

// startProc starts a detached process, records it and reaps it when it
// exits; the caller holds l.mu.
func (l *Lab) startProc(name, netns string, argv []string, logPath string, env []string) error {
	cmd, p, err := startDetached(netns, argv, logPath, env)
	if err != nil {
		return err
	}
	p.Name = name
	l.children[p.PID] = cmd
	go func() {
		_ = cmd.Wait()
		l.mu.Lock()
		delete(l.children, p.PID)
		l.mu.Unlock()
	}()
	l.st.setProc(p)
	if err := l.save(); err != nil {
		return err
	}
	l.log.Info("started", "process", name, "pid", p.PID, "netns", netns, "log", logPath)
	return nil
}

// Dir is the lab directory.
func (l *Lab) Dir() string { return l.dir }

// Prefix is the name prefix of the lab's namespaces.
func (l *Lab) Prefix() string { return l.names.prefix }

// Options are the options the lab was made with, defaults filled in.
func (l *Lab) Options() Options { return l.opts }

// Hosts lists the hosts.
func (l *Lab) Hosts() []Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.st.Hosts)
}

// Host finds a host by name ("host1").
func (l *Lab) Host(name string) (Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.st.host(name)
	if !ok {
		return Host{}, fmt.Errorf("no host %q in this lab (hosts: host1..host%d)", name, len(l.st.Hosts))
	}
	return *h, nil
}

// Workloads lists the workloads, in the order they were added.
func (l *Lab) Workloads() []Workload {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.st.Workloads)
}

// Workload finds a workload by name.
func (l *Lab) Workload(name string) (Workload, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.st.workload(name)
	if !ok {
		return Workload{}, fmt.Errorf("no workload %q in this lab", name)
	}
	return *w, nil
}

// Processes lists the lab's processes as recorded.
func (l *Lab) Processes() []Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.st.Processes)
}

// Namespaces lists the lab's namespaces as recorded.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.st.Namespaces)
}

// Alive reports whether the recorded process still runs.
func (p Proc) Alive() bool { return p.alive() }
