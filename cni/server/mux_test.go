package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/relay"
	"github.com/calyx-net/calyx/cni/server"
)

// serveMux runs the Agent service and relayFn on one socket through a Mux.
func serveMux(t *testing.T, socket string, getCred server.PeerCredFunc, relayFn server.RelayFunc, uids ...uint32) *server.Mux {
	t.Helper()
	l, err := server.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(server.ServerOptionsWith(getCred, uids...)...)
	apipb.RegisterAgentServer(s, nodeStatusServer{})
	m := server.NewMuxWith(s, relayFn, nil, getCred, uids...)
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Serve(l) }()
	t.Cleanup(func() { m.Stop(); <-done })
	return m
}

// echoRelay answers with the command and the caller it saw.
func echoRelay(_ context.Context, caller server.PeerCred, req *relay.Request) *relay.Reply {
	return &relay.Reply{Stdout: fmt.Appendf(nil, "%s from uid %d pid %d: %s", req.Getenv("CNI_COMMAND"), caller.UID, caller.PID, req.Stdin)}
}

// TestMuxServesBothProtocolsOnOneSocket: calyxctl's gRPC and the calyx
// binary's relay share the socket, each with the caller's credentials.
func TestMuxServesBothProtocolsOnOneSocket(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	uid := uint32(os.Getuid())
	serveMux(t, socket, server.SocketPeerCred, echoRelay, uid)
	for range 3 { // interleaved, on fresh connections each
		reply, err := apipb.NewAgentClient(dial(t, socket)).NodeStatus(context.Background(), &apipb.NodeStatusRequest{})
		if want := fmt.Sprintf("uid=%d pid=%d", uid, os.Getpid()); err != nil || reply.GetNodeName() != want {
			t.Fatalf("gRPC through the mux: %v %q, want %q", err, reply.GetNodeName(), want)
		}
		rep, err := relay.Call(socket, 5*time.Second, &relay.Request{Env: map[string]string{"CNI_COMMAND": "ADD"}, Stdin: []byte("{}")})
		if want := fmt.Sprintf("ADD from uid %d pid %d: {}", uid, os.Getpid()); err != nil || rep.Failed || string(rep.Stdout) != want {
			t.Fatalf("relay through the mux: %v %+v, want %q", err, rep, want)
		}
	}
}

func TestMuxRefusesOtherUIDsOnTheRelay(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	fakeCred := func(net.Conn) (server.PeerCred, error) { return server.PeerCred{PID: 42, UID: 1000}, nil }
	called := false
	serveMux(t, socket, fakeCred, func(ctx context.Context, c server.PeerCred, r *relay.Request) *relay.Reply {
		called = true
		return echoRelay(ctx, c, r)
	})
	rep, err := relay.Call(socket, 5*time.Second, &relay.Request{Env: map[string]string{"CNI_COMMAND": "ADD"}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Failed || !strings.Contains(string(rep.Stdout), "uid 1000") || !strings.Contains(string(rep.Stdout), `"code": 999`) {
		t.Errorf("relay as uid 1000: %+v, want code 999 naming the uid", rep)
	}
	if called {
		t.Error("the relay handler ran for a refused caller")
	}
	_, err = apipb.NewAgentClient(dial(t, socket)).NodeStatus(context.Background(), &apipb.NodeStatusRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC as uid 1000 through the mux: %v", err)
	}
}

// TestMuxCancelsACallWhoseCallerLeft: the binary killed by its runtime
// (its connection closed) cancels the call; Stop waits for handlers.
func TestMuxCancelsACallWhoseCallerLeft(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	cancelled := make(chan struct{})
	started := make(chan struct{})
	m := serveMux(t, socket, server.SocketPeerCred, func(ctx context.Context, _ server.PeerCred, _ *relay.Request) *relay.Reply {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return &relay.Reply{}
	}, uint32(os.Getuid()))
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.WriteRequest(conn, &relay.Request{Env: map[string]string{"CNI_COMMAND": "ADD"}}); err != nil {
		t.Fatal(err)
	}
	<-started
	_ = conn.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the call was not cancelled when its caller left")
	}

	// A call in flight when the mux stops is cancelled and waited for.
	stuck := make(chan struct{})
	socket2 := filepath.Join(socketDir(t), "agent.sock")
	m2 := serveMux(t, socket2, server.SocketPeerCred, func(ctx context.Context, _ server.PeerCred, _ *relay.Request) *relay.Reply {
		close(stuck)
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // undoing
		return &relay.Reply{}
	}, uint32(os.Getuid()))
	go func() { _, _ = relay.Call(socket2, 10*time.Second, &relay.Request{}) }()
	<-stuck
	start := time.Now()
	m2.Stop()
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("Stop returned after %s, before the handler finished", took)
	}
	m.Stop()
}

// TestMuxDropsSilentConnections: a client that connects and says nothing
// neither blocks others nor Stop.
func TestMuxDropsSilentConnections(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	m := serveMux(t, socket, server.SocketPeerCred, echoRelay, uint32(os.Getuid()))
	silent, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if rep, err := relay.Call(socket, 5*time.Second, &relay.Request{Env: map[string]string{"CNI_COMMAND": "DEL"}}); err != nil || rep.Failed {
		t.Fatalf("relay beside a silent connection: %v %+v", err, rep)
	}
	start := time.Now()
	m.Stop()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Stop waited %s for a silent connection", took)
	}
}
