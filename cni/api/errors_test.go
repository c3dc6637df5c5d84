package apipb_test

import (
	"errors"
	"fmt"
	"testing"

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
