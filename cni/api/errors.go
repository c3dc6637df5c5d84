package apipb

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CNI error codes the agent may put in a CNIError. Codes below 100 are the
// CNI spec's; 100 and up are calyx's own (documented in docs/cni.md).
const (
	CodeUnknownContainer     uint32 = 3   // spec: container unknown or does not exist
	CodeInvalidEnvironment   uint32 = 4   // spec: invalid necessary environment variables (CNI_*)
	CodeInvalidNetworkConfig uint32 = 7   // spec: invalid network config
	CodeInvalidNetNS         uint32 = 8   // spec: invalid network namespace (CNI_NETNS)
	CodeTryAgainLater        uint32 = 11  // spec: transient, the runtime retries
	CodePluginNotAvailable   uint32 = 50  // spec (STATUS): cannot serve ADD now
	CodeIPAMExhausted        uint32 = 100 // no free address in any pool this node may use
	CodeDataplaneFailed      uint32 = 101 // veth, address or route programming failed
	CodeDatastoreFailed      uint32 = 102 // reading or writing the datastore failed
	CodeEndpointConflict     uint32 = 103 // the attachment exists with other parameters
	CodeInternal             uint32 = 999 // spec: internal error
)

// Error returns a gRPC status error with grpcCode that carries cniCode in a
// CNIError detail, so that the calyx plugin prints cniCode, msg and details.
func Error(grpcCode codes.Code, cniCode uint32, msg, details string) error {
	st := status.New(grpcCode, msg)
	withDetails, err := st.WithDetails(&CNIError{Code: cniCode, Msg: msg, Details: details})
	if err != nil {
		// Only fails for a nil or unmarshalable detail, which CNIError is not;
		// the plain status still carries the message.
		return st.Err()
	}
	return withDetails.Err()
}

// Errorf is Error with a formatted message and no details.
func Errorf(grpcCode codes.Code, cniCode uint32, format string, args ...any) error {
	return Error(grpcCode, cniCode, fmt.Sprintf(format, args...), "")
}

// CNIErrorFrom returns the CNIError carried by a gRPC status error, if any.
func CNIErrorFrom(err error) (*CNIError, bool) {
	var withStatus interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &withStatus) {
		return nil, false
	}
	for _, d := range withStatus.GRPCStatus().Details() {
		if ce, ok := d.(*CNIError); ok {
			return ce, true
		}
	}
	return nil, false
}
