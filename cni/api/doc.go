// Package apipb is the gRPC API served by calyx-agent on its unix socket:
// the CNI service for the calyx CNI plugin and the Agent service for
// calyxctl. calyx.pb.go and calyx_grpc.pb.go are generated from calyx.proto
// by `make generate`; the other files are written by hand.
package apipb
