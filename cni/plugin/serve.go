package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/cni/relay"
)

// Caller is who relayed an invocation, as the socket's peer credentials
// say: the calyx binary's process.
type Caller struct {
	// PID of the plugin process; 0 when unknown (then the check that
	// CNI_NETNS is not the plugin's own namespace is skipped).
	PID int32
}

// Serve runs one invocation relayed by the calyx binary and returns what
// the binary prints. It does what skel does in a plugin process: the
// CNI_* checks per command, the network name and version checks, the
// refusal of the caller's own namespace as CNI_NETNS; then the verb.
func (p *Plugin) Serve(ctx context.Context, caller Caller, req *relay.Request) *relay.Reply {
	var out bytes.Buffer
	if err := p.dispatch(ctx, caller, req, &out); err != nil {
		p.log.Debug("CNI call failed", "command", req.Getenv("CNI_COMMAND"), "container", req.Getenv("CNI_CONTAINERID"), "code", err.Code, "msg", err.Msg)
		return &relay.Reply{Failed: true, Stdout: relay.ErrorJSON(err.Code, err.Msg, err.Details)}
	}
	return &relay.Reply{Stdout: out.Bytes()}
}

// envVar is one CNI_* variable: the commands that need it and its check.
type envVar struct {
	name     string
	required map[string]bool
	validate func(string) *types.Error
	dest     func(*skel.CmdArgs) *string
}

var cniVars = []envVar{
	{"CNI_COMMAND", nil, nil, nil},
	{"CNI_CONTAINERID", map[string]bool{"ADD": true, "CHECK": true, "DEL": true}, utils.ValidateContainerID, func(a *skel.CmdArgs) *string { return &a.ContainerID }},
	{"CNI_NETNS", map[string]bool{"ADD": true, "CHECK": true}, nil, func(a *skel.CmdArgs) *string { return &a.Netns }},
	{"CNI_IFNAME", map[string]bool{"ADD": true, "CHECK": true, "DEL": true}, utils.ValidateInterfaceName, func(a *skel.CmdArgs) *string { return &a.IfName }},
	{"CNI_ARGS", nil, nil, func(a *skel.CmdArgs) *string { return &a.Args }},
	{"CNI_PATH", map[string]bool{"ADD": true, "CHECK": true, "DEL": true, "GC": true, "STATUS": true}, nil, func(a *skel.CmdArgs) *string { return &a.Path }},
	{"CNI_NETNS_OVERRIDE", nil, nil, func(a *skel.CmdArgs) *string { return &a.NetnsOverride }},
}

// minVersion is the first spec version that has each command.
var minVersion = map[string]string{"ADD": "", "DEL": "", "CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

func (p *Plugin) dispatch(ctx context.Context, caller Caller, req *relay.Request, out io.Writer) *types.Error {
	cmd := req.Getenv("CNI_COMMAND")
	verbs := map[string]func(context.Context, io.Writer, *skel.CmdArgs) error{
		"ADD": p.Add, "DEL": p.Del, "CHECK": p.Check, "STATUS": p.Status, "GC": p.GC,
	}
	verb, known := verbs[cmd]
	args := &skel.CmdArgs{StdinData: req.Stdin}
	var missing []string
	for _, v := range cniVars {
		val := req.Getenv(v.name)
		switch {
		case val == "" && (v.required[cmd] || v.name == "CNI_COMMAND"):
			missing = append(missing, v.name)
		case val != "" && v.required[cmd] && v.validate != nil:
			if err := v.validate(val); err != nil {
				return err
			}
		}
		if v.dest != nil {
			*v.dest(args) = val
		}
	}
	if len(missing) > 0 {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("required env variables [%s] missing", strings.Join(missing, ",")), "")
	}
	if !known {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND: %v", cmd), "")
	}
	if err := checkNetworkName(req.Stdin); err != nil {
		return err
	}
	configVersion, err := new(version.ConfigDecoder).Decode(req.Stdin)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	if first := minVersion[cmd]; first != "" {
		if ok, err := version.GreaterThanOrEqualTo(configVersion, first); err != nil {
			return types.NewError(types.ErrDecodingFailure, err.Error(), "")
		} else if !ok {
			return types.NewError(types.ErrIncompatibleCNIVersion, "config version does not allow "+cmd, "")
		}
	}
	if verErr := new(version.Reconciler).Check(configVersion, VersionInfo()); verErr != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions", verErr.Details())
	}
	if (cmd == "ADD" || cmd == "DEL") && !strings.EqualFold(args.NetnsOverride, "true") && args.NetnsOverride != "1" {
		if err := notCallersNetns(caller, args.Netns); err != nil {
			return err
		}
	}
	if err := verb(ctx, out, args); err != nil {
		if te, ok := errors.AsType[*types.Error](err); ok {
			return te
		}
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	return nil
}

// checkNetworkName is skel's first look at the config: a JSON object with
// a valid name.
func checkNetworkName(stdin []byte) *types.Error {
	name, err := networkName(stdin)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("error unmarshall network config: %v", err), "")
	}
	if name == "" {
		return types.NewError(types.ErrInvalidNetworkConfig, "missing network name", "")
	}
	return utils.ValidateNetworkName(name)
}

// notCallersNetns refuses, as skel does, a CNI_NETNS that is the network
// namespace the plugin itself runs in (the runtime's), checked before the
// verb rather than after it. A path that cannot be opened is left to the
// verb (DEL of a namespace already gone is fine).
func notCallersNetns(caller Caller, netnsPath string) *types.Error {
	if caller.PID <= 0 || netnsPath == "" {
		return nil
	}
	var target, own unix.Stat_t
	if unix.Stat(netnsPath, &target) != nil {
		return nil
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", caller.PID), &own); err != nil {
		return types.NewError(types.ErrInvalidNetNS, "get plugin's netns failed", err.Error())
	}
	if target.Dev == own.Dev && target.Ino == own.Ino {
		return types.NewError(types.ErrInvalidNetNS, "plugin's netns and netns from CNI_NETNS should not be the same", "")
	}
	return nil
}

func networkName(stdin []byte) (string, error) {
	var conf struct {
		Name string `json:"name"`
	}
	err := json.Unmarshal(stdin, &conf)
	return conf.Name, err
}
