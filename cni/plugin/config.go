package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/calyx-net/calyx/cni/relay"
)

// DefaultTimeout bounds one plugin call (connect and answer) when the
// config has no timeoutSeconds.
const DefaultTimeout = relay.DefaultTimeout

// NetConf is the calyx plugin's network configuration (stdin).
type NetConf struct {
	types.PluginConf

	// AgentSocket is the agent's unix socket; default relay.DefaultSocket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// MTU of the workload interface; 0 leaves it to the agent.
	MTU int `json:"mtu,omitempty"`
	// TimeoutSeconds bounds each call to the agent; default 10.
	TimeoutSeconds *float64 `json:"timeoutSeconds,omitempty"`
	// RuntimeConfig holds the capability arguments the runtime passed.
	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitzero"`
	// PrevResult shadows PluginConf's map so the raw bytes reach the agent
	// unchanged.
	PrevResult json.RawMessage `json:"prevResult,omitempty"`
}

// RuntimeConfig is the part of runtimeConfig calyx reads.
type RuntimeConfig struct {
	// Labels from the "labels" capability.
	Labels map[string]string `json:"labels,omitempty"`
}

// Timeout is the per-call deadline the config asks for.
func (c *NetConf) Timeout() time.Duration {
	if c.TimeoutSeconds == nil {
		return DefaultTimeout
	}
	return time.Duration(*c.TimeoutSeconds * float64(time.Second))
}

// ParseConfig decodes and validates the network configuration. It returns
// a *types.Error: code 6 (decoding failure) when stdin is not a JSON object,
// code 7 (invalid network config) naming the field otherwise.
func ParseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{AgentSocket: relay.DefaultSocket}
	if err := json.Unmarshal(stdin, conf); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			if strings.HasPrefix(typeErr.Field, "runtimeConfig.labels") && typeErr.Type.Kind().String() == "string" {
				return nil, invalidConfig("runtimeConfig.labels", fmt.Sprintf("values must be JSON strings, not %s", typeErr.Value))
			}
			return nil, invalidConfig(typeErr.Field, fmt.Sprintf("must be a JSON %s, not %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value))
		}
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("calyx: network config on stdin is not valid JSON: %v", err), "")
	}
	if err := conf.validate(); err != nil {
		return nil, err
	}
	return conf, nil
}

func (c *NetConf) validate() error {
	if c.CNIVersion == "" {
		return invalidConfig("cniVersion", "is required")
	}
	if c.Name == "" {
		return invalidConfig("name", "is required")
	}
	if p := relay.SocketProblem(c.AgentSocket); p != "" {
		return invalidConfig("agentSocket", p)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return invalidConfig("mtu", fmt.Sprintf("must be between 68 and 65535 (or omitted), got %d", c.MTU))
	}
	if c.TimeoutSeconds != nil && (*c.TimeoutSeconds <= 0 || *c.TimeoutSeconds > 3600) {
		return invalidConfig("timeoutSeconds", fmt.Sprintf("must be more than 0 and at most 3600, got %v", *c.TimeoutSeconds))
	}
	for k := range c.RuntimeConfig.Labels {
		if k == "" {
			return invalidConfig("runtimeConfig.labels", "has an empty key")
		}
	}
	return nil
}

func invalidConfig(field, problem string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("calyx: invalid network config: %s %s", field, problem), "")
}

// jsonKind names a Go kind the way a JSON author thinks of it.
func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "array"
	case "bool":
		return "boolean"
	default:
		return goKind
	}
}
