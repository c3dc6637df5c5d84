package apipb_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apipb "github.com/calyx-net/calyx/cni/api"
)

func TestErrorCarriesCNICode(t *testing.T) {
	err := apipb.Error(codes.ResourceExhausted, apipb.CodeIPAMExhausted, "pool full", "10.244.0.0/16")
	if status.Code(err) != codes.ResourceExhausted || status.Convert(err).Message() != "pool full" {
		t.Errorf("gRPC status: %v", err)
	}
	// The detail survives wrapping and a trip through the wire format.
	wire, err2 := status.Convert(err).Proto(), fmt.Errorf("add: %w", err)
	for _, e := range []error{err2, status.ErrorProto(wire)} {
		ce, ok := apipb.CNIErrorFrom(e)
		if !ok || ce.GetCode() != 100 || ce.GetMsg() != "pool full" || ce.GetDetails() != "10.244.0.0/16" {
			t.Errorf("CNIErrorFrom(%v) = %v, %v", e, ce, ok)
		}
	}
}

func TestCNIErrorFromPlainErrors(t *testing.T) {
	for _, err := range []error{nil, errors.New("plain"), status.Error(codes.NotFound, "no detail")} {
		if ce, ok := apipb.CNIErrorFrom(err); ok {
			t.Errorf("CNIErrorFrom(%v) found %v", err, ce)
		}
	}
}

// The spec's codes are the values the CNI library gives them.
func TestSpecCodes(t *testing.T) {
	for ours, spec := range map[uint32]uint{
		apipb.CodeUnknownContainer:     types.ErrUnknownContainer,
		apipb.CodeInvalidEnvironment:   types.ErrInvalidEnvironmentVariables,
		apipb.CodeInvalidNetworkConfig: types.ErrInvalidNetworkConfig,
		apipb.CodeTryAgainLater:        types.ErrTryAgainLater,
		apipb.CodePluginNotAvailable:   types.ErrPluginNotAvailable,
		apipb.CodeInternal:             types.ErrInternal,
	} {
		if uint(ours) != spec {
			t.Errorf("code %d, the CNI library's is %d", ours, spec)
		}
	}
}
