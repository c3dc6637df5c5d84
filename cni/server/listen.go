// Package server holds what calyx-agent needs to serve its unix socket
// safely: Listen, and gRPC options that admit only callers with an allowed
// uid (root by default), identified by the kernel (SO_PEERCRED). The RPC
// handlers themselves live in the agent.
package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// maxSocketPath is the room in sockaddr_un.sun_path, less the NUL.
const maxSocketPath = 107

// Listen listens on a unix socket at path for the agent API. It creates the
// directory (0700) when missing, removes a stale socket left by an agent
// that died, refuses to take over a socket someone still serves or a path
// that is not a socket, and makes the socket 0600. The caller closes the
// listener, which removes the socket.
//
// The file modes keep other users away; the uid check of ServerOptions is
// what authorizes each call.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("agent socket path is empty")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("agent socket path %q is %d bytes, longer than the %d a unix socket allows", path, len(path), maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create directory for agent socket %s: %w", path, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on agent socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("restrict agent socket %s to its owner: %w", path, err)
	}
	return l, nil
}

// removeStaleSocket removes path if it is a socket nobody accepts on.
func removeStaleSocket(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect agent socket path %s: %w", path, err)
	}
	if info.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("agent socket path %s exists and is not a socket (%s); refusing to remove it", path, info.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("agent socket %s is in use: another process (another calyx-agent?) accepts connections on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe existing agent socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale agent socket %s: %w", path, err)
	}
	return nil
}
