// Package agenttest is a stand-in calyx-agent for tests of its clients (the
// CNI plugin, calyxctl): it serves the real gRPC API on a real unix socket
// (through cni/server; root and the test's own uid may call) and keeps
// attachments in memory. It does no IPAM and touches no kernel state; it
// hands out 10.244.0.N/32 in order.
package agenttest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/plugin"
	"github.com/calyx-net/calyx/cni/relay"
	"github.com/calyx-net/calyx/cni/server"
)

// Attachment is one workload the fake agent has wired.
type Attachment struct {
	ContainerID string
	IfName      string
	Netns       string
	Network     string
	Labels      map[string]string
	Args        *apipb.CNIArgs
	Address     string // e.g. "10.244.0.2/32"
	HostIface   string
	MTU         uint32
}

// Agent is the fake. Zero value is not usable; call Start.
type Agent struct {
	apipb.UnimplementedCNIServer
	apipb.UnimplementedAgentServer

	// Socket is the unix socket the agent serves.
	Socket string

	mux  *server.Mux
	done chan struct{}

	mu          sync.Mutex
	attachments map[key]*Attachment
	nextHost    int
	ready       bool
	notReady    string
	failures    map[string]error
	delay       time.Duration
	addResult   *apipb.Result
	requests    []proto.Message
	nodeStatus  *apipb.NodeStatusReply
	bgpRoutes   []*apipb.BGPRoute
}

type key struct{ containerID, ifname string }

// Start serves a fresh fake agent on a socket in a new temporary directory
// (short, so the path fits a unix socket) and stops it when tb ends.
func Start(tb testing.TB) *Agent {
	tb.Helper()
	dir, err := os.MkdirTemp("", "calyxcni-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	a, err := Serve(filepath.Join(dir, "agent.sock"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(a.Stop)
	return a
}

// Serve starts a fake agent on socket.
func Serve(socket string) (*Agent, error) {
	l, err := server.Listen(socket)
	if err != nil {
		return nil, err
	}
	uids := []uint32{0, uint32(os.Getuid())}
	grpcServer := grpc.NewServer(server.ServerOptions(uids...)...)
	a := &Agent{
		Socket:      socket,
		done:        make(chan struct{}),
		attachments: map[key]*Attachment{},
		nextHost:    2,
		ready:       true,
		failures:    map[string]error{},
		nodeStatus:  &apipb.NodeStatusReply{NodeName: "fake-node", AgentVersion: "agenttest", Ready: true, DatastoreInSync: true},
	}
	apipb.RegisterCNIServer(grpcServer, a)
	apipb.RegisterAgentServer(grpcServer, a)
	// The calyx binary's relayed invocations go through the real CNI
	// protocol code, as in the agent.
	proto := plugin.New(a, slog.New(slog.DiscardHandler))
	a.mux = server.NewMux(grpcServer, func(ctx context.Context, caller server.PeerCred, req *relay.Request) *relay.Reply {
		return proto.Serve(ctx, plugin.Caller{PID: caller.PID}, req)
	}, nil, uids...)
	go func() {
		defer close(a.done)
		_ = a.mux.Serve(l)
	}()
	return a, nil
}

// Stop ends serving and removes the socket, as a dead agent would leave
// things (minus a stale socket). Calling it twice is fine.
func (a *Agent) Stop() {
	a.mux.Stop()
	<-a.done
}

// SetReady sets what Status and NodeStatus report.
func (a *Agent) SetReady(ready bool, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready, a.notReady = ready, reason
	a.nodeStatus.Ready = ready
}

// FailNext makes the next call of method ("Add", "Del", "Check", "Status",
// "GC", "NodeStatus", "BGPRoutes") return err.
func (a *Agent) FailNext(method string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures[method] = err
}

// SetDelay makes every later call wait d (or until the caller gives up)
// before answering, like an overloaded agent.
func (a *Agent) SetDelay(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delay = d
}

// SetAddResult makes Add answer r instead of the attachment's result (nil
// restores the normal answer), to test how clients handle odd replies.
func (a *Agent) SetAddResult(r *apipb.Result) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.addResult = r
}

// SetNodeStatus and SetBGPRoutes set what the Agent service answers.
func (a *Agent) SetNodeStatus(r *apipb.NodeStatusReply) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nodeStatus = proto.Clone(r).(*apipb.NodeStatusReply)
}

func (a *Agent) SetBGPRoutes(routes []*apipb.BGPRoute) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bgpRoutes = routes
}

// Requests returns copies of every request received, in order.
func (a *Agent) Requests() []proto.Message {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]proto.Message, len(a.requests))
	for i, r := range a.requests {
		out[i] = proto.Clone(r)
	}
	return out
}

// Attachments returns the attachments the fake holds, sorted by container.
func (a *Agent) Attachments() []Attachment {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Attachment
	for _, k := range slices.SortedFunc(maps.Keys(a.attachments), func(x, y key) int {
		return cmp.Or(cmp.Compare(x.containerID, y.containerID), cmp.Compare(x.ifname, y.ifname))
	}) {
		out = append(out, *a.attachments[k])
	}
	return out
}

// begin records a request, waits the configured delay and returns an
// injected failure, if any.
func (a *Agent) begin(ctx context.Context, method string, req proto.Message) error {
	a.mu.Lock()
	a.requests = append(a.requests, proto.Clone(req))
	delay := a.delay
	err, failing := a.failures[method]
	delete(a.failures, method)
	a.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if failing {
		return err
	}
	return nil
}

func (a *Agent) Add(ctx context.Context, req *apipb.AddRequest) (*apipb.AddReply, error) {
	if err := a.begin(ctx, "Add", req); err != nil {
		return nil, err
	}
	inv := req.GetInvocation()
	if inv.GetContainerId() == "" || inv.GetIfname() == "" {
		return nil, apipb.Errorf(codes.InvalidArgument, apipb.CodeInvalidNetworkConfig, "container ID and interface name are required")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ready {
		return nil, apipb.Errorf(codes.Unavailable, apipb.CodeTryAgainLater, "agent not ready: %s", a.notReady)
	}
	k := key{inv.GetContainerId(), inv.GetIfname()}
	att, ok := a.attachments[k]
	if !ok {
		if a.nextHost > 254 {
			return nil, apipb.Errorf(codes.ResourceExhausted, apipb.CodeIPAMExhausted, "fake pool 10.244.0.0/24 is exhausted")
		}
		sum := sha256.Sum256([]byte(inv.GetContainerId() + "/" + inv.GetIfname()))
		att = &Attachment{
			ContainerID: inv.GetContainerId(),
			IfName:      inv.GetIfname(),
			Netns:       inv.GetNetns(),
			Network:     inv.GetNetworkName(),
			Labels:      maps.Clone(inv.GetLabels()),
			Args:        proto.Clone(inv.GetArgs()).(*apipb.CNIArgs),
			Address:     fmt.Sprintf("10.244.0.%d/32", a.nextHost),
			HostIface:   "cx" + hex.EncodeToString(sum[:])[:11],
			MTU:         inv.GetMtu(),
		}
		a.nextHost++
		a.attachments[k] = att
	}
	if a.addResult != nil {
		return &apipb.AddReply{Result: proto.Clone(a.addResult).(*apipb.Result)}, nil
	}
	return &apipb.AddReply{Result: resultFor(att)}, nil
}

func resultFor(att *Attachment) *apipb.Result {
	return &apipb.Result{
		Interfaces: []*apipb.Interface{
			{Name: att.HostIface, Mac: "ee:ee:ee:ee:ee:ee"},
			{Name: att.IfName, Mac: "02:00:0a:f4:00:02", Sandbox: att.Netns, Mtu: att.MTU},
		},
		Ips:    []*apipb.IPConfig{{Address: att.Address, Interface: proto.Int32(1)}},
		Routes: []*apipb.Route{{Dst: "0.0.0.0/0", Gw: "169.254.1.1"}},
	}
}

func (a *Agent) Del(ctx context.Context, req *apipb.DelRequest) (*apipb.DelReply, error) {
	if err := a.begin(ctx, "Del", req); err != nil {
		return nil, err
	}
	inv := req.GetInvocation()
	a.mu.Lock()
	defer a.mu.Unlock()
	k := key{inv.GetContainerId(), inv.GetIfname()}
	if _, ok := a.attachments[k]; !ok {
		return nil, status.Errorf(codes.NotFound, "no attachment %s/%s", k.containerID, k.ifname)
	}
	delete(a.attachments, k)
	return &apipb.DelReply{}, nil
}

func (a *Agent) Check(ctx context.Context, req *apipb.CheckRequest) (*apipb.CheckReply, error) {
	if err := a.begin(ctx, "Check", req); err != nil {
		return nil, err
	}
	inv := req.GetInvocation()
	a.mu.Lock()
	defer a.mu.Unlock()
	att, ok := a.attachments[key{inv.GetContainerId(), inv.GetIfname()}]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no attachment %s/%s", inv.GetContainerId(), inv.GetIfname())
	}
	for _, ip := range inv.GetPrevResult().GetIps() {
		if ip.GetAddress() == att.Address {
			return &apipb.CheckReply{}, nil
		}
	}
	return nil, apipb.Errorf(codes.FailedPrecondition, apipb.CodeInternal, "attachment %s/%s has %s, prevResult does not list it", att.ContainerID, att.IfName, att.Address)
}

func (a *Agent) Status(ctx context.Context, req *apipb.StatusRequest) (*apipb.StatusReply, error) {
	if err := a.begin(ctx, "Status", req); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return &apipb.StatusReply{Ready: a.ready, Reason: a.notReady}, nil
}

func (a *Agent) GC(ctx context.Context, req *apipb.GCRequest) (*apipb.GCReply, error) {
	if err := a.begin(ctx, "GC", req); err != nil {
		return nil, err
	}
	valid := map[key]bool{}
	for _, v := range req.GetValidAttachments() {
		valid[key{v.GetContainerId(), v.GetIfname()}] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	reply := &apipb.GCReply{}
	for k, att := range a.attachments {
		if att.Network == req.GetNetworkName() && !valid[k] {
			delete(a.attachments, k)
			reply.Removed = append(reply.Removed, &apipb.Attachment{ContainerId: k.containerID, Ifname: k.ifname})
		}
	}
	return reply, nil
}

func (a *Agent) NodeStatus(ctx context.Context, req *apipb.NodeStatusRequest) (*apipb.NodeStatusReply, error) {
	if err := a.begin(ctx, "NodeStatus", req); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return proto.Clone(a.nodeStatus).(*apipb.NodeStatusReply), nil
}

func (a *Agent) BGPRoutes(ctx context.Context, req *apipb.BGPRoutesRequest) (*apipb.BGPRoutesReply, error) {
	if err := a.begin(ctx, "BGPRoutes", req); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	reply := &apipb.BGPRoutesReply{}
	for _, r := range a.bgpRoutes {
		if req.GetPrefix() == "" || r.GetPrefix() == req.GetPrefix() {
			reply.Routes = append(reply.Routes, proto.Clone(r).(*apipb.BGPRoute))
		}
	}
	return reply, nil
}

// ensure the fake keeps implementing the whole API.
var (
	_ apipb.CNIServer   = (*Agent)(nil)
	_ apipb.AgentServer = (*Agent)(nil)
)
