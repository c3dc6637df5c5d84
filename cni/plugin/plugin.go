// Package plugin is the CNI protocol of the calyx plugin, run inside
// calyx-agent: the calyx binary relays each invocation (cni/relay) and
// Serve makes the checks skel would make, parses the network config and
// the CNI_* environment, runs the verb against the agent's CNI service and
// prints the result in the config's version. Tests call the verbs
// directly.
package plugin

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/relay"
)

// VersionInfo lists the CNI spec versions the plugin speaks (the calyx
// binary answers VERSION itself, from relay.SupportedVersions).
func VersionInfo() version.PluginInfo {
	return version.PluginSupports(relay.SupportedVersions...)
}

// API is the agent's CNI service, called in-process (apipb.CNIServer
// without its gRPC embedding).
type API interface {
	Add(context.Context, *apipb.AddRequest) (*apipb.AddReply, error)
	Del(context.Context, *apipb.DelRequest) (*apipb.DelReply, error)
	Check(context.Context, *apipb.CheckRequest) (*apipb.CheckReply, error)
	Status(context.Context, *apipb.StatusRequest) (*apipb.StatusReply, error)
	GC(context.Context, *apipb.GCRequest) (*apipb.GCReply, error)
}

// Plugin runs CNI verbs against the agent's API. Errors it returns are
// *types.Error with the CNI code the runtime should see.
type Plugin struct {
	api API
	log *slog.Logger
}

// New returns a Plugin calling api.
func New(api API, log *slog.Logger) *Plugin {
	return &Plugin{api: api, log: log}
}

// Add asks the agent to wire the workload and prints the CNI result in the
// config's cniVersion.
func (p *Plugin) Add(ctx context.Context, out io.Writer, args *skel.CmdArgs) error {
	conf, inv, err := p.invocation(args, true)
	if err != nil {
		return err
	}
	reply, err := call(ctx, p, conf, "ADD", func(ctx context.Context) (*apipb.AddReply, error) {
		return p.api.Add(ctx, &apipb.AddRequest{Invocation: inv})
	})
	if err != nil {
		return err
	}
	result, err := toCNIResult(reply.GetResult())
	if err != nil {
		return types.NewError(types.ErrInternal, "calyx: the agent's ADD result is unusable", err.Error())
	}
	versioned, err := result.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("calyx: cannot express the result in CNI %s", conf.CNIVersion), err.Error())
	}
	return versioned.PrintTo(out)
}

// Del asks the agent to remove the attachment. An attachment the agent
// does not know is already gone: success.
func (p *Plugin) Del(ctx context.Context, _ io.Writer, args *skel.CmdArgs) error {
	conf, inv, err := p.invocation(args, false)
	if err != nil {
		return err
	}
	_, err = call(ctx, p, conf, "DEL", func(ctx context.Context) (*apipb.DelReply, error) {
		reply, err := p.api.Del(ctx, &apipb.DelRequest{Invocation: inv})
		if isUnknownAttachment(err) {
			p.log.Debug("DEL of an attachment the agent does not know", "container", inv.GetContainerId(), "ifname", inv.GetIfname(), "agent", err)
			return &apipb.DelReply{}, nil
		}
		return reply, err
	})
	return err
}

// Check asks the agent whether the attachment still matches prevResult.
func (p *Plugin) Check(ctx context.Context, _ io.Writer, args *skel.CmdArgs) error {
	conf, inv, err := p.invocation(args, true)
	if err != nil {
		return err
	}
	if inv.GetPrevResult() == nil {
		return invalidConfig("prevResult", "is required for CHECK")
	}
	_, err = call(ctx, p, conf, "CHECK", func(ctx context.Context) (*apipb.CheckReply, error) {
		return p.api.Check(ctx, &apipb.CheckRequest{Invocation: inv})
	})
	return err
}

// Status fails with code 50 unless the agent answers and is ready.
func (p *Plugin) Status(ctx context.Context, _ io.Writer, args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	reply, err := call(ctx, p, conf, "STATUS", func(ctx context.Context) (*apipb.StatusReply, error) {
		return p.api.Status(ctx, &apipb.StatusRequest{
			CniVersion:    conf.CNIVersion,
			NetworkName:   conf.Name,
			NetworkConfig: args.StdinData,
		})
	})
	if err != nil {
		if te, ok := err.(*types.Error); ok && te.Code < 50 {
			// Anything short of an answer the agent coded itself means the
			// plugin cannot serve ADD: that is what 50 says.
			return types.NewError(types.ErrPluginNotAvailable, te.Msg, te.Details)
		}
		return err
	}
	if !reply.GetReady() {
		reason := reply.GetReason()
		if reason == "" {
			reason = "no reason given"
		}
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("calyx agent at %s is not ready: %s", conf.AgentSocket, reason), "")
	}
	return nil
}

// GC asks the agent to remove this network's attachments that the runtime
// no longer lists as valid.
func (p *Plugin) GC(ctx context.Context, _ io.Writer, args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	req := &apipb.GCRequest{
		CniVersion:    conf.CNIVersion,
		NetworkName:   conf.Name,
		NetworkConfig: args.StdinData,
	}
	for _, a := range conf.ValidAttachments {
		req.ValidAttachments = append(req.ValidAttachments, &apipb.Attachment{ContainerId: a.ContainerID, Ifname: a.IfName})
	}
	reply, err := call(ctx, p, conf, "GC", func(ctx context.Context) (*apipb.GCReply, error) {
		return p.api.GC(ctx, req)
	})
	if err != nil {
		return err
	}
	p.log.Debug("GC done", "network", conf.Name, "valid", len(req.ValidAttachments), "removed", len(reply.GetRemoved()))
	return nil
}

// invocation parses stdin and the CNI_* environment into the common part
// of ADD, DEL and CHECK. A prevResult that cannot be decoded fails the verb
// when strictPrev is set; DEL only passes the raw bytes on, so that a stale
// cache never blocks a delete.
func (p *Plugin) invocation(args *skel.CmdArgs, strictPrev bool) (*NetConf, *apipb.Invocation, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	cniArgs, err := ParseCNIArgs(args.Args)
	if err != nil {
		return nil, nil, err
	}
	inv := &apipb.Invocation{
		ContainerId:   args.ContainerID,
		Netns:         args.Netns,
		Ifname:        args.IfName,
		Args:          cniArgs,
		Labels:        conf.RuntimeConfig.Labels,
		CniVersion:    conf.CNIVersion,
		NetworkName:   conf.Name,
		Mtu:           uint32(conf.MTU),
		NetworkConfig: args.StdinData,
	}
	if len(conf.PrevResult) > 0 {
		inv.PrevResultJson = conf.PrevResult
		prev, err := parsePrevResult(conf)
		switch {
		case err == nil:
			inv.PrevResult = prev
		case strictPrev:
			return nil, nil, types.NewError(types.ErrDecodingFailure, "calyx: prevResult cannot be decoded", err.Error())
		default:
			p.log.Warn("ignoring undecodable prevResult", "container", args.ContainerID, "error", err)
		}
	}
	return conf, inv, nil
}

// parsePrevResult reads prevResult in the config's version and converts it
// to 1.1, so that the agent sees one format.
func parsePrevResult(conf *NetConf) (*apipb.Result, error) {
	prev, err := version.NewResult(conf.CNIVersion, conf.PrevResult)
	if err != nil {
		return nil, err
	}
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return nil, err
	}
	return fromCNIResult(res), nil
}

// call runs one call of the agent's API under the config's deadline.
func call[T any](ctx context.Context, p *Plugin, conf *NetConf, verb string, rpc func(context.Context) (T, error)) (T, error) {
	var zero T
	timeout := conf.Timeout()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := rpc(ctx)
	if err != nil {
		p.log.Debug("agent call failed", "verb", verb, "error", err)
		return zero, rpcError(verb, conf.AgentSocket, timeout, err)
	}
	return reply, nil
}

// isUnknownAttachment reports an agent answer meaning "no such attachment".
func isUnknownAttachment(err error) bool {
	if err == nil {
		return false
	}
	if ce, ok := apipb.CNIErrorFrom(err); ok {
		return ce.GetCode() == uint32(types.ErrUnknownContainer)
	}
	return status.Code(err) == codes.NotFound
}
