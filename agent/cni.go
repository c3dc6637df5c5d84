package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/routes"
	"github.com/calyx-net/calyx/routes/veth"
)

// cniServer serves the calyx CNI plugin: ADD wires a workload, DEL
// unwires it, CHECK verifies it, GC removes what the runtime no longer
// knows, STATUS says whether ADD can work now.
type cniServer struct {
	apipb.UnimplementedCNIServer
	a     *Agent
	locks attachmentLocks
}

// lockAttachment serializes the calls on one attachment (see
// attachmentLocks).
func (s *cniServer) lockAttachment(ctx context.Context, at attachment) (func(), error) {
	unlock, err := s.locks.lock(ctx, at.endpoint)
	if err != nil {
		return nil, apipb.Errorf(codes.Unavailable, apipb.CodeTryAgainLater, "another CNI call for endpoint %s is still running: %v", at.endpoint, err)
	}
	return unlock, nil
}

// begin does what every per-attachment verb does first: refuse while the
// datastore is not in sync, derive the attachment from the invocation and
// take its lock. The caller runs unlock when done.
func (s *cniServer) begin(ctx context.Context, inv *apipb.Invocation) (at attachment, unlock func(), err error) {
	if err := s.notReady(); err != nil {
		return at, nil, err
	}
	if at, err = s.a.attachmentOf(inv); err != nil {
		return at, nil, err
	}
	unlock, err = s.lockAttachment(ctx, at)
	return at, unlock, err
}

// attachment is what identifies one workload interface and what the agent
// derives from it.
type attachment struct {
	containerID, ifName, netns string
	endpoint                   string // WorkloadEndpoint name
	hostIf                     string // cx + 11 hex
	handle                     string // IPAM handle
}

func (a *Agent) attachmentOf(inv *apipb.Invocation) (attachment, error) {
	if inv == nil || inv.ContainerId == "" {
		return attachment{}, apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidEnvironment, "CNI_CONTAINERID is empty")
	}
	ifName := inv.Ifname
	if ifName == "" {
		ifName = "eth0"
	}
	if len(ifName) > 15 || strings.ContainsAny(ifName, "/ \t\n:") || ifName == "." || ifName == ".." {
		return attachment{}, apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidEnvironment, "CNI_IFNAME %q is not a valid interface name (at most 15 characters, no '/', ':' or spaces)", ifName)
	}
	name := datastore.WorkloadEndpointName(a.node, inv.ContainerId, ifName)
	return attachment{
		containerID: inv.ContainerId, ifName: ifName, netns: inv.Netns,
		endpoint: name, hostIf: veth.HostInterfaceName(name), handle: ipam.AttachmentHandle(a.node, inv.ContainerId, ifName),
	}, nil
}

// observe records a request's outcome in the metrics.
func (s *cniServer) observe(verb string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		code := apipb.CodeInternal
		if ce, ok := apipb.CNIErrorFrom(err); ok {
			code = ce.Code
		}
		result = fmt.Sprint(code)
	}
	s.a.metrics.cniRequests.WithLabelValues(verb, result).Inc()
	s.a.metrics.cniDuration.WithLabelValues(verb).Observe(time.Since(start).Seconds())
}

func (s *cniServer) notReady() error {
	if !s.a.isSynced() {
		return apipb.Errorf(codes.Unavailable, apipb.CodeTryAgainLater, "calyx-agent on %s is starting: the datastore is not in sync yet", s.a.node)
	}
	return nil
}

// Add wires a workload: addresses from IPAM, the veth pair, the host
// route, the policy chains, the WorkloadEndpoint. Any failure undoes every
// step already taken, in reverse order.
func (s *cniServer) Add(ctx context.Context, req *apipb.AddRequest) (reply *apipb.AddReply, err error) {
	start := time.Now()
	defer func() { s.observe("add", start, err) }()
	a := s.a
	inv := req.GetInvocation()
	at, unlock, err := s.begin(ctx, inv)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if at.netns == "" {
		return nil, apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidEnvironment, "CNI_NETNS is empty")
	}
	if err := checkTargetNetns(at.netns); err != nil {
		return nil, err
	}
	meta, err := a.endpointMetaOf(ctx, inv)
	if err != nil {
		return nil, err
	}
	log := a.log.With("container", shortID(at.containerID), "endpoint", at.endpoint)

	// A repeated ADD for a working attachment returns what it has; for a
	// broken one it removes the old plumbing and wires it again.
	rebuild := false
	if w := a.localEndpoint(at.endpoint); w != nil {
		if owner := w.Spec.ContainerID; owner != "" && owner != at.containerID {
			return nil, endpointConflict(at, owner)
		}
		cerr := a.plumber.Check(ctx, a.vethSpec(at, w, inv))
		if cerr == nil {
			log.Info("repeated ADD for a working endpoint; returning its result")
			return &apipb.AddReply{Result: a.resultFor(at, w)}, nil
		}
		log.Info("repeated ADD for a broken endpoint; rebuilding it", "problem", cerr)
		rebuild = true
	}
	if err := checkTargetIfName(at, rebuild); err != nil {
		return nil, err
	}

	var undo undoStack
	defer func() {
		if err != nil {
			undo.unwind(log)
			log.Warn("ADD failed; every step undone", "err", err)
		}
	}()

	// The two etcd writes (the address commit, then the endpoint record)
	// and the kernel work (the veth pair, then its configuration) do not
	// wait for each other, except that the configuration needs the
	// addresses: the record is written as soon as IPAM answers, while the
	// pair is still being made.
	tIPAM := time.Now()
	allocated := make(chan allocation, 1)
	recorded := make(chan error, 1)
	var recordTook time.Duration // set before recorded is sent
	go func() {
		al := a.allocate(ctx, at, inv, meta)
		al.took = time.Since(tIPAM)
		allocated <- al
		if al.err == nil {
			tRecord := time.Now()
			err := withDatastoreTimeout(ctx, func(ctx context.Context) error {
				if err := a.failing("endpoint-write"); err != nil {
					return err
				}
				_, perr := a.client.Put(ctx, al.w)
				return perr
			})
			recordTook = time.Since(tRecord)
			recorded <- err
		}
	}()
	pair, vethErr := a.createVeth(ctx, at, inv, rebuild)
	vethTook := time.Since(tIPAM)
	al := <-allocated
	w, addrs := al.w, al.addrs
	// Undone last first: the veth goes before its addresses are released,
	// so they are never reused while the old interface exists.
	if al.err == nil {
		undo.push("releasing addresses", func(ctx context.Context) error { return a.ipam.Release(ctx, at.handle) })
		undo.push("dropping the endpoint's routes and policy", func(ctx context.Context) error {
			a.mu.Lock()
			delete(a.pendingAdd, at.endpoint)
			a.mu.Unlock()
			a.policy.DeleteEndpoint(at.endpoint)
			for _, p := range addrs {
				a.local.DeleteRoute(p)
			}
			defer a.poke()
			return a.local.ApplyPrefixes(ctx, addrs...)
		})
	}
	if pair != nil {
		defer pair.Close()
		undo.push("removing the veth", func(ctx context.Context) error {
			return a.plumber.Teardown(ctx, at.netns, at.ifName, at.hostIf)
		})
	}
	// record waits for the endpoint write; every return after a
	// successful allocation goes through it, so that a written record is
	// always undone on failure.
	record := func() error {
		recErr := <-recorded
		if recErr == nil {
			undo.push("deleting the WorkloadEndpoint", func(ctx context.Context) error {
				if derr := a.client.Delete(ctx, datastore.KindWorkloadEndpoint, at.endpoint); derr != nil && !errors.Is(derr, datastore.ErrNotFound) {
					return derr
				}
				return nil
			})
			return nil
		}
		return datastoreError("writing WorkloadEndpoint "+at.endpoint, recErr)
	}
	if al.err != nil {
		return nil, ipamError(al.err)
	}
	tWire := time.Now()
	wireErr := vethErr
	if wireErr == nil {
		wireErr = a.fault("ipam-allocated")
	}
	if wireErr == nil {
		wireErr = a.fault("veth-created")
	}
	if wireErr == nil {
		wireErr = a.wire(ctx, wiring{at: at, w: w, pair: pair, addrs: addrs})
	}
	wireTook := time.Since(tWire)
	if recErr := record(); wireErr == nil {
		wireErr = recErr
	}
	if wireErr != nil {
		return nil, wireErr
	}
	a.poke()
	log.Info("workload added", "addresses", w.Spec.IPNetworks, "host_interface", at.hostIf,
		"took", time.Since(start).Round(time.Microsecond), "checks", tIPAM.Sub(start).Round(time.Microsecond),
		"ipam", al.took.Round(time.Microsecond), "veth", vethTook.Round(time.Microsecond),
		"wire", wireTook.Round(time.Microsecond), "record", recordTook.Round(time.Microsecond))
	return &apipb.AddReply{Result: a.resultFor(at, w)}, nil
}

// allocation is the outcome of an ADD's IPAM commit.
type allocation struct {
	addrs []netip.Prefix
	w     *datastore.WorkloadEndpoint // the endpoint to record, with addrs
	err   error
	took  time.Duration
}

// allocate commits the attachment's addresses and, once they are known,
// makes the endpoint part of this node's desired state before etcd knows
// it, so that nothing recomputed meanwhile removes its route.
func (a *Agent) allocate(ctx context.Context, at attachment, inv *apipb.Invocation, meta endpointMeta) (al allocation) {
	al.err = withDatastoreTimeout(ctx, func(ctx context.Context) (err error) {
		if err := a.failing("ipam-commit"); err != nil {
			return err
		}
		al.addrs, err = a.ipam.Allocate(ctx, ipam.Request{
			Handle: at.handle, Node: a.node,
			Attrs: ipam.Attributes{Namespace: inv.GetArgs().GetK8SPodNamespace(), Pod: inv.GetArgs().GetK8SPodName(), Endpoint: at.endpoint},
		})
		return err
	})
	if al.err != nil {
		return al
	}
	// The container MAC is derived from the endpoint, so the record is
	// complete before the veth exists.
	al.w = a.newEndpoint(at, inv, meta, al.addrs)
	al.w.Spec.MAC = veth.ContainerMAC(at.endpoint).String()
	a.mu.Lock()
	a.pendingAdd[at.endpoint] = al.w
	delete(a.pendingDel, at.endpoint)
	a.mu.Unlock()
	return al
}

// createVeth makes the attachment's veth pair, without addresses yet
// (removing a broken one of the attachment first when rebuilding). It
// returns the CNI error to send; on error no pair of this call is left.
func (a *Agent) createVeth(ctx context.Context, at attachment, inv *apipb.Invocation, rebuild bool) (*veth.Pair, error) {
	if rebuild {
		if err := a.plumber.Teardown(ctx, at.netns, at.ifName, at.hostIf); err != nil {
			return nil, apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "removing the broken veth %s before rewiring: %v", at.hostIf, err)
		}
	}
	pair, err := a.plumber.Create(ctx, a.vethSpec(at, nil, inv))
	if err != nil {
		return nil, apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "wiring the workload: %v", err)
	}
	return pair, nil
}

// undoTimeout bounds each undo step. Undo uses its own context: the
// request's may be what ended.
const undoTimeout = 30 * time.Second

// undoStack is what a CNI ADD has done so far, each step with its undo.
type undoStack struct {
	steps []undoStep
}

type undoStep struct {
	what string
	undo func(context.Context) error
}

// push records a step taken; what names its undo ("releasing addresses").
func (u *undoStack) push(what string, undo func(context.Context) error) {
	u.steps = append(u.steps, undoStep{what: what, undo: undo})
}

// unwind undoes every step, last first, each with a fresh context. A step
// whose undo fails is logged, and the others are still undone.
func (u *undoStack) unwind(log *slog.Logger) {
	for i := len(u.steps) - 1; i >= 0; i-- {
		s := u.steps[i]
		ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
		if err := s.undo(ctx); err != nil {
			log.Error("undo: "+s.what, "err", err)
		}
		cancel()
	}
	u.steps = nil
}

// wiring is what wire programs for one ADD.
type wiring struct {
	at    attachment
	w     *datastore.WorkloadEndpoint
	pair  *veth.Pair     // from createVeth, not configured yet
	addrs []netip.Prefix // from IPAM, as in w
}

// wire finishes the kernel side of a new endpoint: the pair's addresses
// and routes, the host route and the policy. The caller's undo removes
// the pair, the route and the policy if it fails. It returns the CNI error
// to send.
func (a *Agent) wire(ctx context.Context, o wiring) error {
	at := o.at
	if _, err := o.pair.Configure(ctx, o.addrs); err != nil {
		return apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "wiring the workload: %v", err)
	}
	if err := a.fault("veth-configured"); err != nil {
		return err
	}
	// Program the route and policy now: the workload must be reachable
	// when ADD returns, not after the next sync.
	for _, p := range o.addrs {
		if err := a.local.ApplyRoute(ctx, routes.Route{Dst: p, Type: routes.RouteDevice, LinkName: at.hostIf}); err != nil {
			return apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "host route to %s: %v", p, err)
		}
	}
	if err := a.policy.SetEndpoint(o.w); err != nil {
		return apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "policy refused the endpoint: %v", err)
	}
	// An endpoint no policy selects is opened with a netlink ipset write
	// (no process); a selected one gets its chains.
	if err := a.policy.ProgramEndpoint(ctx, o.w.Metadata.Name); err != nil {
		return apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "programming policy: %v", err)
	}
	return a.fault("dataplane-programmed")
}

// failing fails an etcd write, as the datastore would, when a test asked
// for it (WithFaults with ipam-commit or endpoint-write): the kernel work
// beside it must be undone too.
func (a *Agent) failing(write string) error {
	if a.opts.fault == nil {
		return nil
	}
	if err := a.opts.fault(write); err != nil {
		return fmt.Errorf("injected failure of %s: %w", write, err)
	}
	return nil
}

// fault fails the request after a named step when a test asked for it
// (WithFaults), to prove that every step taken is undone: ipam-allocated,
// veth-created, veth-configured, dataplane-programmed.
func (a *Agent) fault(step string) error {
	if a.opts.fault == nil {
		return nil
	}
	if err := a.opts.fault(step); err != nil {
		return apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "injected fault after %s: %v", step, err)
	}
	return nil
}

// endpointConflict: the endpoint name of this attachment is taken by
// another container's. Endpoint names keep only the first 12 characters of
// the container ID, so two IDs sharing them collide; refusing is the only
// safe answer, since wiring would take over the other workload's veth.
func endpointConflict(at attachment, owner string) error {
	return apipb.Errorf(codes.AlreadyExists, apipb.CodeEndpointConflict,
		"WorkloadEndpoint %s (host interface %s) belongs to container %s, not %s: their IDs share the first 12 characters the endpoint name is made of",
		at.endpoint, at.hostIf, owner, at.containerID)
}

func ipamError(err error) error {
	switch {
	case errors.Is(err, ipam.ErrPoolExhausted), errors.Is(err, ipam.ErrMaxBlocks):
		return apipb.Errorf(codes.ResourceExhausted, apipb.CodeIPAMExhausted, "allocating addresses: %v", err)
	case errors.Is(err, ipam.ErrNoPoolForNode):
		return apipb.Errorf(codes.FailedPrecondition, apipb.CodeIPAMExhausted, "allocating addresses: %v (create an IPPool whose nodeSelector matches this node)", err)
	case errors.Is(err, ipam.ErrContention):
		return apipb.Errorf(codes.Unavailable, apipb.CodeTryAgainLater, "allocating addresses: %v", err)
	}
	return datastoreError("allocating addresses", err)
}

// endpointLabels: the runtime's labels plus the automatic ones. A
// reserved label (calyx.dev/…, pcns.…) from the runtime is refused: those
// are what policy trusts to say which node, namespace, pod and service
// account a workload is, so a runtime's or a CNI caller's say must not
// forge them. Automatic values too long for a label get a hashed value.
func (a *Agent) endpointLabels(inv *apipb.Invocation) (map[string]string, error) {
	labels := map[string]string{}
	var problems []string
	for k, v := range inv.GetLabels() {
		if datastore.IsReservedLabel(k) {
			problems = append(problems, fmt.Sprintf("label %q is reserved (only Calyx sets %s* and %s* labels)", k, datastore.ReservedLabelPrefix, datastore.NamespaceLabelPrefix))
			continue
		}
		if err := datastore.ValidateLabel(k, v); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		labels[k] = v
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidNetworkConfig, "runtimeConfig.labels: %s", strings.Join(problems, "; "))
	}
	if err := reservedCNIArgs(inv.GetArgs().GetRaw()); err != nil {
		return nil, err
	}
	labels[datastore.LabelNode] = datastore.LabelValue(a.node)
	if ns := inv.GetArgs().GetK8SPodNamespace(); ns != "" {
		labels[datastore.LabelNamespace] = datastore.LabelValue(ns)
	}
	if pod := inv.GetArgs().GetK8SPodName(); pod != "" {
		labels[datastore.LabelPod] = datastore.LabelValue(pod)
	}
	return labels, nil
}

// reservedCNIArgs refuses a CNI_ARGS key that names a reserved label:
// CNI_ARGS never sets labels, and a caller who tries to set calyx.dev/…
// that way is told so rather than ignored.
func reservedCNIArgs(raw string) error {
	for pair := range strings.SplitSeq(raw, ";") {
		key, _, _ := strings.Cut(pair, "=")
		if datastore.IsReservedLabel(key) {
			return apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidEnvironment, "CNI_ARGS: %q is a reserved label (only Calyx sets %s* labels; CNI_ARGS sets no labels)", key, datastore.ReservedLabelPrefix)
		}
	}
	return nil
}

func (a *Agent) newEndpoint(at attachment, inv *apipb.Invocation, meta endpointMeta, addrs []netip.Prefix) *datastore.WorkloadEndpoint {
	r, _ := datastore.NewResource(datastore.KindWorkloadEndpoint)
	w := r.(*datastore.WorkloadEndpoint)
	w.Metadata.Name = at.endpoint
	w.Metadata.Labels = meta.labels
	workload := at.containerID
	if ns, pod := inv.GetArgs().GetK8SPodNamespace(), inv.GetArgs().GetK8SPodName(); ns != "" && pod != "" {
		workload = ns + "/" + pod
	}
	w.Spec = datastore.WorkloadEndpointSpec{
		Node: a.node, Workload: workload, ContainerID: at.containerID,
		InterfaceName: at.hostIf, ContainerInterface: at.ifName, Network: inv.GetNetworkName(),
		Profiles: meta.profiles, Ports: meta.ports,
	}
	for _, p := range addrs {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, p.String())
	}
	return w
}

// vethSpec is the attachment's veth; w may be nil (no addresses yet).
func (a *Agent) vethSpec(at attachment, w *datastore.WorkloadEndpoint, inv *apipb.Invocation) veth.Spec {
	var addrs []netip.Prefix
	if w != nil {
		addrs = endpointPrefixes(w)
	}
	return veth.Spec{NetNSPath: at.netns, ContainerIfName: at.ifName, HostIfName: at.hostIf, Addresses: addrs, MTU: int(inv.GetMtu()),
		ContainerMAC: veth.ContainerMAC(at.endpoint)}
}

// resultFor builds the CNI result: the workload interface, its addresses
// and default routes via the link-local gateways that proxy-ARP answers.
func (a *Agent) resultFor(at attachment, w *datastore.WorkloadEndpoint) *apipb.Result {
	iface := &apipb.Interface{Name: at.ifName, Sandbox: at.netns, Mac: w.Spec.MAC}
	out := &apipb.Result{Interfaces: []*apipb.Interface{iface, {Name: at.hostIf, Mac: veth.HostMAC.String()}}}
	zero := int32(0)
	for _, p := range endpointPrefixes(w) {
		gw, def := veth.GatewayV4, netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if !p.Addr().Is4() {
			gw, def = veth.GatewayV6, netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		out.Ips = append(out.Ips, &apipb.IPConfig{Address: p.String(), Interface: &zero, Gateway: gw.String()})
		out.Routes = append(out.Routes, &apipb.Route{Dst: def.String(), Gw: gw.String()})
	}
	return out
}

// localEndpoint is this node's endpoint of that name, if any.
func (a *Agent) localEndpoint(name string) *datastore.WorkloadEndpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pendingDel[name] {
		return nil
	}
	if w := a.pendingAdd[name]; w != nil {
		return w
	}
	if w := a.state.endpoints[name]; w != nil && w.Spec.Node == a.node {
		return w
	}
	return nil
}

// Del unwires a workload. Idempotent: whatever is already gone (netns,
// link, addresses, endpoint) is not an error.
func (s *cniServer) Del(ctx context.Context, req *apipb.DelRequest) (reply *apipb.DelReply, err error) {
	start := time.Now()
	defer func() { s.observe("del", start, err) }()
	at, unlock, err := s.begin(ctx, req.GetInvocation())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.a.removeAttachment(ctx, at); err != nil {
		return nil, err
	}
	return &apipb.DelReply{}, nil
}

// removeAttachment undoes an ADD; the caller holds the attachment's lock.
func (a *Agent) removeAttachment(ctx context.Context, at attachment) error {
	w := a.localEndpoint(at.endpoint)
	if w != nil && w.Spec.ContainerID != "" && w.Spec.ContainerID != at.containerID {
		// The endpoint (and its veth, route and policy) is another
		// container's, whose ID shares our endpoint name: its ADD was
		// refused, so at most our own addresses are left to release.
		a.log.Warn("DEL for a container whose endpoint name belongs to another; releasing only its addresses",
			"container", shortID(at.containerID), "endpoint", at.endpoint, "owner", shortID(w.Spec.ContainerID))
		if err := withDatastoreTimeout(ctx, func(ctx context.Context) error { return a.releaseAttachment(ctx, at) }); err != nil {
			return datastoreError("releasing addresses of "+at.handle, err)
		}
		return nil
	}
	start := time.Now()
	if err := a.plumber.Teardown(ctx, at.netns, at.ifName, at.hostIf); err != nil {
		return apipb.Errorf(codes.Internal, apipb.CodeDataplaneFailed, "removing the veth %s: %v", at.hostIf, err)
	}
	teardownTook := time.Since(start)
	a.mu.Lock()
	delete(a.pendingAdd, at.endpoint)
	if _, inEtcd := a.state.endpoints[at.endpoint]; inEtcd {
		a.pendingDel[at.endpoint] = true
	}
	a.mu.Unlock()
	a.policy.DeleteEndpoint(at.endpoint)
	if w != nil {
		// The route's link is gone with the veth; drop it from the
		// desired set now so the table does not keep it pending.
		ps := endpointPrefixes(w)
		for _, p := range ps {
			a.local.DeleteRoute(p)
		}
		a.local.ApplyPrefixes(ctx, ps...)
	}
	a.poke()
	tDatastore := time.Now()
	// The veth is gone, so the address may be reused: release it and drop
	// the record at the same time (two independent etcd writes).
	deleted := make(chan error, 1)
	go func() {
		deleted <- withDatastoreTimeout(ctx, func(ctx context.Context) error {
			return a.client.Delete(ctx, datastore.KindWorkloadEndpoint, at.endpoint)
		})
	}()
	relErr := withDatastoreTimeout(ctx, func(ctx context.Context) error { return a.releaseAttachment(ctx, at) })
	delErr := <-deleted
	if relErr != nil {
		return datastoreError("releasing addresses of "+at.handle, relErr)
	}
	if delErr != nil && !errors.Is(delErr, datastore.ErrNotFound) {
		return datastoreError("deleting WorkloadEndpoint "+at.endpoint, delErr)
	}
	a.log.Info("workload deleted", "container", shortID(at.containerID), "endpoint", at.endpoint,
		"took", time.Since(start).Round(time.Microsecond), "teardown", teardownTook.Round(time.Microsecond),
		"datastore", time.Since(tDatastore).Round(time.Microsecond))
	return nil
}

// releaseAttachment frees the attachment's addresses: its node-scoped
// handle, and a legacy handle (container.ifname, from before handles were
// node-scoped) only when the legacy record says it is this node's, so a
// DEL never frees another node's container of the same ID.
func (a *Agent) releaseAttachment(ctx context.Context, at attachment) error {
	return a.ipam.ReleaseAttachment(ctx, a.node, at.containerID, at.ifName)
}

// Check verifies the attachment in the workload's namespace and on the
// host, and that the runtime's prevResult matches what the agent holds.
func (s *cniServer) Check(ctx context.Context, req *apipb.CheckRequest) (reply *apipb.CheckReply, err error) {
	start := time.Now()
	defer func() { s.observe("check", start, err) }()
	a := s.a
	inv := req.GetInvocation()
	at, unlock, err := s.begin(ctx, inv)
	if err != nil {
		return nil, err
	}
	defer unlock()
	w := a.localEndpoint(at.endpoint)
	if w == nil || (w.Spec.ContainerID != "" && w.Spec.ContainerID != at.containerID) {
		return nil, apipb.Errorf(codes.NotFound, apipb.CodeUnknownContainer, "no workload endpoint %s on %s for container %s", at.endpoint, a.node, shortID(at.containerID))
	}
	if err := a.plumber.Check(ctx, a.vethSpec(at, w, inv)); err != nil {
		return nil, apipb.Errorf(codes.FailedPrecondition, apipb.CodeDataplaneFailed, "%v", err)
	}
	want := map[string]bool{}
	for _, p := range endpointPrefixes(w) {
		want[p.String()] = true
	}
	for _, ip := range inv.GetPrevResult().GetIps() {
		if !want[ip.Address] {
			return nil, apipb.Errorf(codes.FailedPrecondition, apipb.CodeDataplaneFailed, "prevResult address %s is not the endpoint's (%v)", ip.Address, w.Spec.IPNetworks)
		}
	}
	for _, p := range endpointPrefixes(w) {
		found := false
		for _, r := range a.local.Routes() {
			if r.Dst == p && r.LinkName == at.hostIf {
				found = true
			}
		}
		if !found {
			return nil, apipb.Errorf(codes.FailedPrecondition, apipb.CodeDataplaneFailed, "no host route to %s via %s", p, at.hostIf)
		}
	}
	return &apipb.CheckReply{}, nil
}

// Status: ADD can work when the datastore is in sync, policy is programmed
// and a pool serves this node.
func (s *cniServer) Status(ctx context.Context, _ *apipb.StatusRequest) (*apipb.StatusReply, error) {
	a := s.a
	if !a.isSynced() {
		return &apipb.StatusReply{Ready: false, Reason: "the datastore is not in sync yet"}, nil
	}
	if !a.datastoreUp() {
		return &apipb.StatusReply{Ready: false, Reason: "etcd is unreachable or without quorum: ADD cannot allocate addresses"}, nil
	}
	if err := a.policy.Ready(); err != nil {
		return &apipb.StatusReply{Ready: false, Reason: err.Error()}, nil
	}
	a.mu.Lock()
	pools := 0
	for _, p := range a.state.pools {
		if !p.Spec.Disabled {
			pools++
		}
	}
	a.mu.Unlock()
	if pools == 0 {
		return &apipb.StatusReply{Ready: false, Reason: "no enabled IPPool exists (calyxctl apply -f pool.yaml)"}, nil
	}
	return &apipb.StatusReply{Ready: true}, nil
}

// GC removes this node's attachments of the request's network that the
// runtime no longer lists: another network's attachments are not its to
// judge (a runtime lists only the network it collects).
func (s *cniServer) GC(ctx context.Context, req *apipb.GCRequest) (reply *apipb.GCReply, err error) {
	start := time.Now()
	defer func() { s.observe("gc", start, err) }()
	a := s.a
	if err := s.notReady(); err != nil {
		return nil, err
	}
	valid := map[string]bool{}
	for _, v := range req.GetValidAttachments() {
		valid[v.ContainerId+"/"+v.Ifname] = true
	}
	a.mu.Lock()
	var stale []*datastore.WorkloadEndpoint
	var unknown []string
	for _, w := range a.localEndpointsLocked() {
		switch {
		case w.Spec.ContainerID == "" || valid[w.Spec.ContainerID+"/"+w.Spec.ContainerInterface]:
		case w.Spec.Network == "":
			unknown = append(unknown, w.Metadata.Name)
		case w.Spec.Network == req.GetNetworkName():
			stale = append(stale, w)
		}
	}
	a.mu.Unlock()
	if len(unknown) > 0 {
		// Made before endpoints recorded their network: GC of one network
		// cannot tell whether they are its own, so it leaves them (DEL
		// still removes them).
		a.log.Info("GC: leaving endpoints that record no network", "network", req.GetNetworkName(), "endpoints", unknown)
	}
	reply = &apipb.GCReply{}
	var errs []string
	for _, w := range stale {
		at := attachment{containerID: w.Spec.ContainerID, ifName: w.Spec.ContainerInterface, endpoint: w.Metadata.Name,
			hostIf: w.Spec.InterfaceName, handle: ipam.AttachmentHandle(a.node, w.Spec.ContainerID, w.Spec.ContainerInterface)}
		unlock, err := s.lockAttachment(ctx, at)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		err = a.removeAttachment(ctx, at)
		unlock()
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		reply.Removed = append(reply.Removed, &apipb.Attachment{ContainerId: at.containerID, Ifname: at.ifName})
	}
	if len(errs) > 0 {
		return reply, apipb.Errorf(codes.Internal, apipb.CodeInternal, "GC: %s", strings.Join(errs, "; "))
	}
	return reply, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
