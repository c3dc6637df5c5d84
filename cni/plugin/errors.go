package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apipb "github.com/calyx-net/calyx/cni/api"
)

// rpcError turns a failed call into the CNI error the runtime sees. A
// CNIError from the agent wins; otherwise the gRPC code is mapped.
func rpcError(verb, socket string, timeout time.Duration, err error) *types.Error {
	if ce, ok := apipb.CNIErrorFrom(err); ok {
		return types.NewError(uint(ce.GetCode()), ce.GetMsg(), ce.GetDetails())
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("calyx agent at %s did not answer %s within %s", socket, verb, timeout), err.Error())
		}
		return types.NewError(types.ErrInternal, fmt.Sprintf("calyx: %s failed: %v", verb, err), "")
	}
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
	case codes.NotFound:
		return types.NewError(types.ErrUnknownContainer, msg, "")
	case codes.Unavailable:
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("calyx agent at %s is unavailable; check that calyx-agent is running", socket), msg)
	case codes.DeadlineExceeded, codes.Canceled:
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("calyx agent at %s did not answer %s within %s", socket, verb, timeout), msg)
	case codes.ResourceExhausted, codes.Aborted, codes.FailedPrecondition:
		return types.NewError(types.ErrTryAgainLater, msg, "")
	case codes.Unimplemented:
		return types.NewError(types.ErrInternal, fmt.Sprintf("calyx agent at %s does not implement %s; are plugin and agent the same version?", socket, verb), msg)
	case codes.PermissionDenied, codes.Unauthenticated:
		return types.NewError(types.ErrInternal, fmt.Sprintf("calyx agent at %s refused the call; the plugin must run as root", socket), msg)
	default:
		return types.NewError(types.ErrInternal, fmt.Sprintf("calyx: %s failed", verb), fmt.Sprintf("%s: %s", st.Code(), msg))
	}
}
