package plugin

import (
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	apipb "github.com/calyx-net/calyx/cni/api"
)

// ParseCNIArgs reads the keys calyx uses from CNI_ARGS ("K=V;K=V") and
// keeps the whole string. Unknown keys are ignored whatever IgnoreUnknown
// says: they reach the agent in Raw. A pair without "=" is error code 4.
func ParseCNIArgs(raw string) (*apipb.CNIArgs, error) {
	args := &apipb.CNIArgs{Raw: raw}
	if raw == "" {
		return args, nil
	}
	for pair := range strings.SplitSeq(raw, ";") {
		if pair == "" {
			continue
		}
		key, value, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("calyx: CNI_ARGS: invalid pair %q, want KEY=VALUE", pair), "")
		}
		switch key {
		case "K8S_POD_NAMESPACE":
			args.K8SPodNamespace = value
		case "K8S_POD_NAME":
			args.K8SPodName = value
		case "K8S_POD_INFRA_CONTAINER_ID":
			args.K8SPodInfraContainerId = value
		case "K8S_POD_UID":
			args.K8SPodUid = value
		}
	}
	return args, nil
}
