package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// PeerCred identifies the process at the other end of a unix socket, as the
// kernel recorded it when the process connected.
type PeerCred struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerCredFunc reads the peer credentials of an accepted connection.
// SocketPeerCred is the real one; tests may pass a fake.
type PeerCredFunc func(net.Conn) (PeerCred, error)

// SocketPeerCred reads SO_PEERCRED from a unix socket connection.
func SocketPeerCred(conn net.Conn) (PeerCred, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return PeerCred{}, fmt.Errorf("connection %T has no file descriptor", conn)
	}
	if _, unixConn := conn.(*net.UnixConn); !unixConn {
		return PeerCred{}, fmt.Errorf("connection %T is not a unix socket", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return PeerCred{}, fmt.Errorf("raw connection: %w", err)
	}
	var (
		ucred    *unix.Ucred
		ucredErr error
	)
	if err := raw.Control(func(fd uintptr) {
		ucred, ucredErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return PeerCred{}, fmt.Errorf("read SO_PEERCRED: %w", err)
	}
	if ucredErr != nil {
		return PeerCred{}, fmt.Errorf("read SO_PEERCRED: %w", ucredErr)
	}
	return PeerCred{PID: ucred.Pid, UID: ucred.Uid, GID: ucred.Gid}, nil
}

// AuthInfo is what the server's transport credentials attach to every
// connection: the caller's peer credentials, or why they could not be read.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Peer PeerCred
	Err  error
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return "unix-peercred" }

// PeerCredFromContext returns the caller's credentials inside a handler.
func PeerCredFromContext(ctx context.Context) (PeerCred, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PeerCred{}, false
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok || ai.Err != nil {
		return PeerCred{}, false
	}
	return ai.Peer, true
}

// peerCredTransport reads peer credentials at accept time. It does not
// encrypt: it is meant for unix sockets only.
type peerCredTransport struct {
	getCred PeerCredFunc
}

func (t peerCredTransport) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	var (
		cred PeerCred
		err  error
	)
	if sc, ok := conn.(*sniffedConn); ok {
		cred, err = sc.cred, sc.credErr // read by the Mux at accept
	} else {
		cred, err = t.getCred(conn)
	}
	// A failure is kept and reported per call (PermissionDenied), which
	// tells the caller more than a dropped connection would.
	return conn, AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		Peer:           cred,
		Err:            err,
	}, nil
}

func (peerCredTransport) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("unix peer credentials are for servers; clients use insecure credentials")
}

func (peerCredTransport) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}

func (t peerCredTransport) Clone() credentials.TransportCredentials { return t }

func (peerCredTransport) OverrideServerName(string) error { return nil }

// ServerOptions makes a gRPC server admit only callers whose uid is in
// allowedUIDs (root alone when none is given); others get PermissionDenied.
// Serve it on a listener from Listen.
func ServerOptions(allowedUIDs ...uint32) []grpc.ServerOption {
	return ServerOptionsWith(SocketPeerCred, allowedUIDs...)
}

// ServerOptionsWith is ServerOptions with another source of peer
// credentials, for tests.
func ServerOptionsWith(getCred PeerCredFunc, allowedUIDs ...uint32) []grpc.ServerOption {
	if len(allowedUIDs) == 0 {
		allowedUIDs = []uint32{0}
	}
	allowed := slices.Clone(allowedUIDs)
	return []grpc.ServerOption{
		grpc.Creds(peerCredTransport{getCred: getCred}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := authorize(ctx, allowed); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := authorize(ss.Context(), allowed); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

// authorize fails closed: no credentials means no access.
func authorize(ctx context.Context, allowed []uint32) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "calyx agent: caller unknown (no peer information)")
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return status.Error(codes.PermissionDenied, "calyx agent: caller not identified by unix peer credentials")
	}
	if err := authorizeCred(ai.Peer, ai.Err, allowed); err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}
