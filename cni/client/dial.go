// Package client connects to calyx-agent's unix socket over gRPC, as
// calyxctl does (the calyx CNI binary uses the lighter cni/relay).
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/calyx-net/calyx/cni/relay"
)

// DefaultSocket is where calyx-agent listens unless told otherwise.
const DefaultSocket = relay.DefaultSocket

// ErrUnreachable means nothing answers on the agent socket: it is missing,
// refuses connections, or does not complete the gRPC handshake in time.
var ErrUnreachable = errors.New("calyx agent is not reachable")

// UnreachableError is what Dial returns when nothing answers: it matches
// ErrUnreachable with errors.Is and keeps the cause.
type UnreachableError struct {
	Socket string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("calyx agent is not reachable at %s: %v", e.Socket, e.Err)
}

func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// Dial connects to the agent on the unix socket and waits, at most timeout
// or until ctx ends, for the connection to be ready. A missing socket or a
// refused connection fails at once with an *UnreachableError. The caller closes the returned connection.
func Dial(ctx context.Context, socket string, timeout time.Duration) (*grpc.ClientConn, error) {
	if socket == "" {
		return nil, errors.New("agent socket path is empty")
	}
	var (
		mu      sync.Mutex
		lastErr error
	)
	// Our own dialer (rather than a "unix:" target) keeps the path out of
	// target parsing and keeps proxy settings from the environment out.
	dialUnix := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", socket)
		if err != nil {
			mu.Lock()
			lastErr = err
			mu.Unlock()
		}
		return conn, err
	}
	conn, err := grpc.NewClient("passthrough:///localhost",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialUnix),
	)
	if err != nil {
		return nil, fmt.Errorf("create gRPC client for %s: %w", socket, err)
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		state := conn.GetState()
		switch state {
		case connectivity.Ready:
			return conn, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			_ = conn.Close()
			mu.Lock()
			cause := lastErr
			mu.Unlock()
			if cause == nil {
				cause = errors.New("connection failed during the gRPC handshake")
			}
			return nil, &UnreachableError{Socket: socket, Err: cause}
		}
		if !conn.WaitForStateChange(ctx, state) {
			_ = conn.Close()
			return nil, &UnreachableError{Socket: socket, Err: fmt.Errorf("no gRPC answer within %s: %w", timeout, ctx.Err())}
		}
	}
}
