package client_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/calyx-net/calyx/cni/agenttest"
	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/client"
)

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "calyxcli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func TestDialReachesAgent(t *testing.T) {
	agent := agenttest.Start(t)
	conn, err := client.Dial(context.Background(), agent.Socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reply, err := apipb.NewAgentClient(conn).NodeStatus(context.Background(), &apipb.NodeStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if reply.GetNodeName() != "fake-node" {
		t.Errorf("node name %q", reply.GetNodeName())
	}
}

// Missing and refusing sockets must fail at once, not after the timeout.
func TestDialFailsFastWhenNobodyListens(t *testing.T) {
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	_ = l.Close()

	for _, tc := range []struct {
		name, socket string
		cause        error
	}{
		{"missing", filepath.Join(dir, "missing.sock"), syscall.ENOENT},
		{"refused", stale, syscall.ECONNREFUSED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			conn, err := client.Dial(context.Background(), tc.socket, 30*time.Second)
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded")
			}
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("Dial took %s; a dead socket must fail fast", elapsed)
			}
			if !errors.Is(err, client.ErrUnreachable) || !errors.Is(err, tc.cause) {
				t.Errorf("error %v: want ErrUnreachable and %v", err, tc.cause)
			}
			var ue *client.UnreachableError
			if !errors.As(err, &ue) || ue.Socket != tc.socket {
				t.Errorf("error %v does not name socket %s", err, tc.socket)
			}
		})
	}
}

// A process that accepts but never speaks gRPC (hung agent) is unreachable
// after the timeout.
func TestDialTimesOutOnSilentListener(t *testing.T) {
	socket := filepath.Join(shortDir(t), "silent.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	start := time.Now()
	conn, err := client.Dial(context.Background(), socket, 300*time.Millisecond)
	if err == nil {
		conn.Close()
		t.Fatal("Dial to a silent listener succeeded")
	}
	if !errors.Is(err, client.ErrUnreachable) {
		t.Errorf("error %v: want ErrUnreachable", err)
	}
	if elapsed := time.Since(start); elapsed < 250*time.Millisecond {
		t.Errorf("Dial gave up after %s, before its timeout", elapsed)
	}
}

func TestDialRejectsEmptyPath(t *testing.T) {
	if _, err := client.Dial(context.Background(), "", time.Second); err == nil {
		t.Fatal("empty socket path accepted")
	}
}
