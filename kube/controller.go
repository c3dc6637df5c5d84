package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
)

// Config is what the controllers work with.
type Config struct {
	Kube      kubernetes.Interface
	Datastore *datastore.Client
	IPAM      *ipam.IPAM
	Log       *slog.Logger
	// Resync re-checks everything this often (default 5 minutes), besides
	// after every etcd relist and every API watch restart.
	Resync time.Duration
	// EndpointGCGrace is how long a pod must be gone from the API before
	// its endpoints and addresses are released (default 5 minutes): a
	// pod's sandbox may outlive its API object for its grace period.
	EndpointGCGrace time.Duration
	// NodeRetry is how often a removed node is looked at again while pods
	// still name it (default 10 s).
	NodeRetry time.Duration
	Metrics   *Metrics // optional
}

// Controllers runs the four controllers on one informer factory.
type Controllers struct {
	cfg     Config
	log     *slog.Logger
	factory informers.SharedInformerFactory
	queues  map[string]*queue
	st      *etcdState
	synced  atomic.Bool

	mu sync.Mutex
	// policyOf maps Calyx Policy names back to NetworkPolicy keys.
	policyOf map[string]string
	// missingSince is when a pod's endpoint was first seen without its pod.
	missingSince map[string]time.Time
	// nodesGone are Kubernetes Nodes seen deleted (their Calyx Node goes).
	nodesGone map[string]bool
}

// queue is one controller's work queue and its sync function.
type queue struct {
	name string
	q    workqueue.TypedRateLimitingInterface[string]
	sync func(ctx context.Context, key string) (requeueAfter time.Duration, err error)
}

const (
	ctrlPolicy    = "policy"
	ctrlNamespace = "namespace"
	ctrlPod       = "pod"
	ctrlNode      = "node"
)

// New wires the controllers; Run starts them.
func New(cfg Config) *Controllers {
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Minute
	}
	if cfg.EndpointGCGrace == 0 {
		cfg.EndpointGCGrace = 5 * time.Minute
	}
	if cfg.NodeRetry == 0 {
		cfg.NodeRetry = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c := &Controllers{
		cfg:          cfg,
		log:          cfg.Log,
		factory:      informers.NewSharedInformerFactory(cfg.Kube, cfg.Resync),
		queues:       map[string]*queue{},
		st:           newEtcdState(),
		policyOf:     map[string]string{},
		missingSince: map[string]time.Time{},
		nodesGone:    map[string]bool{},
	}
	for name, fn := range map[string]func(context.Context, string) (time.Duration, error){
		ctrlPolicy: c.syncPolicy, ctrlNamespace: c.syncNamespace, ctrlPod: c.syncPod, ctrlNode: c.syncNode,
	} {
		c.queues[name] = &queue{name: name, sync: fn, q: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: name})}
	}
	c.watchAPI()
	if cfg.Metrics != nil {
		cfg.Metrics.queues(c)
	}
	return c
}

func (c *Controllers) enqueue(ctrl, key string) { c.queues[ctrl].q.Add(key) }

// Synced reports whether the informers and the etcd view are in sync.
func (c *Controllers) Synced() bool { return c.synced.Load() }

// watchAPI registers the informer handlers: every change enqueues the key
// of what it touches.
func (c *Controllers) watchAPI() {
	keyed := func(ctrl string) cache.ResourceEventHandler {
		add := func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				c.enqueue(ctrl, key)
			}
		}
		return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }, DeleteFunc: add}
	}
	c.onWatchError(c.factory.Networking().V1().NetworkPolicies().Informer(), keyed(ctrlPolicy))
	c.onWatchError(c.factory.Core().V1().Namespaces().Informer(), keyed(ctrlNamespace))
	c.onWatchError(c.factory.Core().V1().Pods().Informer(), keyed(ctrlPod))
	c.onWatchError(c.factory.Core().V1().Nodes().Informer(), cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				c.mu.Lock()
				c.nodesGone[key] = true
				c.mu.Unlock()
				c.enqueue(ctrlNode, key)
			}
		},
	})
}

// onWatchError adds the handler and, when the informer's watch of the API
// breaks, schedules a full resync once it has listed again.
func (c *Controllers) onWatchError(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) {
	if _, err := inf.AddEventHandler(h); err != nil {
		c.log.Error("adding an informer handler", "err", err)
	}
	_ = inf.SetWatchErrorHandler(func(r *cache.Reflector, err error) {
		c.log.Warn("Kubernetes API watch interrupted; relisting and resyncing", "err", err)
		go func() {
			time.Sleep(time.Second)
			c.resyncAll()
		}()
	})
}

// Run runs the controllers until ctx ends.
func (c *Controllers) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		for _, q := range c.queues {
			q.q.ShutDown()
		}
	}()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()

	etcdSynced := make(chan struct{})
	syncer := datastore.NewSyncer(c.cfg.Datastore.Etcd(), c.st.sources(), c.log)
	var once sync.Once
	go func() {
		_ = syncer.Run(ctx, func(evs []datastore.Event) {
			if c.st.apply(evs, c.onEtcdChange) {
				once.Do(func() { close(etcdSynced) })
				if c.Synced() {
					c.log.Info("etcd relisted; resyncing every controller")
					c.resyncAll()
				}
			}
		})
	}()
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("the %v informer did not sync: %w", typ, ctx.Err())
		}
	}
	select {
	case <-etcdSynced:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.synced.Store(true)
	c.log.Info("Kubernetes and etcd in sync; controllers running")
	c.resyncAll()

	var wg sync.WaitGroup
	for _, q := range c.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.work(ctx, q) {
			}
		}()
	}
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, q := range c.queues {
				q.q.ShutDown()
			}
			wg.Wait()
			return ctx.Err()
		case <-t.C:
			c.resyncAll()
		}
	}
}

// work runs one item of a queue; false when the queue is shut down.
func (c *Controllers) work(ctx context.Context, q *queue) bool {
	key, quit := q.q.Get()
	if quit {
		return false
	}
	defer q.q.Done(key)
	start := time.Now()
	after, err := q.sync(ctx, key)
	c.cfg.Metrics.observe(q.name, start, err)
	switch {
	case err != nil:
		c.log.Warn("reconcile failed; retrying", "controller", q.name, "key", key, "err", err)
		q.q.AddRateLimited(key)
	case after > 0:
		q.q.Forget(key)
		q.q.AddAfter(key, after)
	default:
		q.q.Forget(key)
	}
	return true
}

// resyncAll enqueues every object of every controller.
func (c *Controllers) resyncAll() {
	for _, o := range c.factory.Networking().V1().NetworkPolicies().Informer().GetStore().List() {
		if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
			c.enqueue(ctrlPolicy, key)
		}
	}
	for _, o := range c.factory.Core().V1().Namespaces().Informer().GetStore().List() {
		if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
			c.enqueue(ctrlNamespace, key)
		}
	}
	for _, o := range c.factory.Core().V1().Pods().Informer().GetStore().List() {
		if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
			c.enqueue(ctrlPod, key)
		}
	}
	for _, r := range c.st.list(datastore.KindPolicy) {
		if owned(r) {
			c.enqueue(ctrlPolicy, r.GetMeta().Name) // orphan check
		}
	}
	for _, r := range c.st.list(datastore.KindProfile) {
		if ns, ok := namespaceOfProfile(r.GetMeta().Name); ok && owned(r) {
			c.enqueue(ctrlNamespace, ns)
		}
	}
	for _, r := range c.st.list(datastore.KindWorkloadEndpoint) {
		if key, ok := podKeyOf(r.(*datastore.WorkloadEndpoint)); ok {
			c.enqueue(ctrlPod, key)
		}
	}
	for _, r := range c.st.list(datastore.KindNode) {
		c.enqueue(ctrlNode, r.GetMeta().Name)
	}
}

// onEtcdChange enqueues what a change in etcd concerns: a manual edit of
// a translated resource is reverted, a new endpoint gets its pod's labels.
func (c *Controllers) onEtcdChange(r datastore.Resource) {
	switch v := r.(type) {
	case *datastore.Policy:
		if owned(v) || strings.HasPrefix(v.Metadata.Name, policyPrefix) {
			c.mu.Lock()
			key, ok := c.policyOf[v.Metadata.Name]
			c.mu.Unlock()
			if !ok {
				key = v.Metadata.Name // orphan check
			}
			c.enqueue(ctrlPolicy, key)
		}
	case *datastore.Profile:
		if ns, ok := namespaceOfProfile(v.Metadata.Name); ok {
			c.enqueue(ctrlNamespace, ns)
		}
	case *datastore.WorkloadEndpoint:
		if key, ok := podKeyOf(v); ok {
			c.enqueue(ctrlPod, key)
		}
	case *datastore.Node:
		// A Node that shows up after its Kubernetes Node went (the view
		// lagged the informer) must still be removed.
		c.enqueue(ctrlNode, v.Metadata.Name)
	}
}

// podKeyOf is "namespace/pod" of a Kubernetes pod's endpoint.
func podKeyOf(w *datastore.WorkloadEndpoint) (string, bool) {
	if w.Metadata.Labels[datastore.LabelOrchestrator] != Orchestrator {
		return "", false
	}
	ns, name, ok := strings.Cut(w.Spec.Workload, "/")
	return w.Spec.Workload, ok && ns != "" && name != ""
}

// sameResource compares what the controllers set: labels and spec.
func sameResource(a, b datastore.Resource) bool {
	type view struct {
		Labels map[string]string
		Spec   any
	}
	enc := func(r datastore.Resource) string {
		var spec any
		switch v := r.(type) {
		case *datastore.Policy:
			spec = v.Spec
		case *datastore.Profile:
			spec = v.Spec
		case *datastore.WorkloadEndpoint:
			spec = v.Spec
		}
		b, _ := json.Marshal(view{r.GetMeta().Labels, spec})
		return string(b)
	}
	return enc(a) == enc(b)
}

// applyOwned writes want unless the stored object of that name is a
// user's; it reports whether it wrote. The write is conditional (create
// if absent, update at the revision seen): the etcd view may lag, and a
// user's object that appeared meanwhile must never be overwritten.
func (c *Controllers) applyOwned(ctx context.Context, want datastore.Resource) (bool, error) {
	kind, name := want.GetKind(), want.GetMeta().Name
	have := c.st.get(kind, name)
	if have != nil && !owned(have) {
		c.log.Warn("a Calyx resource of that name exists and is not ours; leaving it alone", "resource", datastore.Describe(want))
		return false, nil
	}
	if have != nil && sameResource(have, want) {
		return false, nil
	}
	var wrote datastore.Resource
	var err error
	if have == nil {
		wrote, err = c.cfg.Datastore.Create(ctx, want)
	} else {
		want.GetMeta().ResourceVersion = have.GetMeta().ResourceVersion
		wrote, err = c.cfg.Datastore.Update(ctx, want)
	}
	if errors.Is(err, datastore.ErrAlreadyExists) || errors.Is(err, datastore.ErrConflict) {
		// The view lagged: take the stored object and decide again.
		cur, gerr := c.cfg.Datastore.Get(ctx, kind, name)
		switch {
		case errors.Is(gerr, datastore.ErrNotFound):
			c.st.remove(kind, name)
		case gerr != nil:
			return false, gerr
		default:
			c.st.put(cur)
		}
		return false, fmt.Errorf("%s changed while it was written; trying again", datastore.Describe(want))
	}
	if err != nil {
		return false, err
	}
	c.st.put(wrote)
	return true, nil
}

// deleteOwned deletes the resource if it is ours.
func (c *Controllers) deleteOwned(ctx context.Context, kind datastore.Kind, name string) error {
	have := c.st.get(kind, name)
	if have == nil || !owned(have) {
		return nil
	}
	err := c.cfg.Datastore.Delete(ctx, kind, name)
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return err
	}
	c.st.remove(kind, name)
	return nil
}
