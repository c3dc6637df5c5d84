package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/cni/client"
	"github.com/calyx-net/calyx/cni/server"
)

// helperEnv makes the test binary act as a client (see TestMain), so that a
// test can call the agent from a process with another uid.
const helperEnv = "CALYX_SERVER_TEST_DIAL"

func TestMain(m *testing.M) {
	if socket := os.Getenv(helperEnv); socket != "" {
		os.Exit(dialAndCall(socket))
	}
	os.Exit(m.Run())
}

// dialAndCall prints the outcome of one NodeStatus call: "ok", "unreachable"
// or the gRPC code.
func dialAndCall(socket string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, socket, 5*time.Second)
	if errors.Is(err, client.ErrUnreachable) {
		fmt.Println("unreachable:", err)
		return 0
	}
	if err != nil {
		fmt.Println("dial error:", err)
		return 1
	}
	defer conn.Close()
	_, err = apipb.NewAgentClient(conn).NodeStatus(ctx, &apipb.NodeStatusRequest{})
	if err != nil {
		fmt.Println(status.Code(err).String()+":", status.Convert(err).Message())
		return 0
	}
	fmt.Println("ok")
	return 0
}

// socketDir is a short private directory (unix socket paths are short).
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "calyxsrv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// nodeStatusServer answers NodeStatus with the caller's credentials.
type nodeStatusServer struct {
	apipb.UnimplementedAgentServer
}

func (nodeStatusServer) NodeStatus(ctx context.Context, _ *apipb.NodeStatusRequest) (*apipb.NodeStatusReply, error) {
	cred, ok := server.PeerCredFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer credentials in the handler")
	}
	return &apipb.NodeStatusReply{NodeName: fmt.Sprintf("uid=%d pid=%d", cred.UID, cred.PID)}, nil
}

// serve runs an Agent service with opts on a listener from Listen.
func serve(t *testing.T, socket string, opts ...grpc.ServerOption) {
	t.Helper()
	l, err := server.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	apipb.RegisterAgentServer(s, nodeStatusServer{})
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(l) }()
	t.Cleanup(func() { s.Stop(); <-done })
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := client.Dial(context.Background(), socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestListenCreatesPrivateDirectoryAndSocket(t *testing.T) {
	socket := filepath.Join(socketDir(t), "run", "calyx", "agent.sock")
	l, err := server.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	dirInfo, err := os.Stat(filepath.Dir(socket))
	if err != nil {
		t.Fatal(err)
	}
	if perm := dirInfo.Mode().Perm(); perm != 0o700 {
		t.Errorf("socket directory mode %o, want 700", perm)
	}
	info, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Type() != os.ModeSocket {
		t.Errorf("%s is %s, want a socket", socket, info.Mode().Type())
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	// An agent that died leaves its socket behind: nobody accepts on it.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	if _, err := os.Lstat(socket); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	serve(t, socket, server.ServerOptions(uint32(os.Getuid()))...)
	reply, err := apipb.NewAgentClient(dial(t, socket)).NodeStatus(context.Background(), &apipb.NodeStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("uid=%d pid=%d", os.Getuid(), os.Getpid()); reply.GetNodeName() != want {
		t.Errorf("handler saw %q, want %q", reply.GetNodeName(), want)
	}
}

func TestListenRefusesSocketInUse(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	serve(t, socket, server.ServerOptions(uint32(os.Getuid()))...)
	_, err := server.Listen(socket)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Listen on a live socket: %v, want an 'in use' error", err)
	}
	// The first server must still work.
	if _, err := apipb.NewAgentClient(dial(t, socket)).NodeStatus(context.Background(), &apipb.NodeStatusRequest{}); err != nil {
		t.Fatalf("first server broken by the refused Listen: %v", err)
	}
}

func TestListenRefusesToRemoveNonSocket(t *testing.T) {
	path := filepath.Join(socketDir(t), "agent.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := server.Listen(path)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v, want a 'not a socket' error", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("regular file changed: %q, %v", b, err)
	}
}

func TestListenRejectsOverlongPath(t *testing.T) {
	_, err := server.Listen("/tmp/" + strings.Repeat("x", 120))
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("overlong path: %v", err)
	}
}

func TestCallerWithOtherUIDIsDenied(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	fakeCred := func(net.Conn) (server.PeerCred, error) { return server.PeerCred{PID: 42, UID: 1000, GID: 1000}, nil }
	serve(t, socket, server.ServerOptionsWith(fakeCred)...)
	conn := dial(t, socket)

	_, err := apipb.NewAgentClient(conn).NodeStatus(context.Background(), &apipb.NodeStatusRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "uid 1000") {
		t.Fatalf("unary call as uid 1000: %v, want PermissionDenied naming the uid", err)
	}

	// Streams go through the same check.
	desc := &grpc.StreamDesc{StreamName: "NodeStatus", ServerStreams: true}
	stream, err := conn.NewStream(context.Background(), desc, apipb.Agent_NodeStatus_FullMethodName)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&apipb.NodeStatusRequest{}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	err = stream.RecvMsg(&apipb.NodeStatusReply{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream as uid 1000: %v, want PermissionDenied", err)
	}
}

func TestAllowedUIDsAndCredentialErrors(t *testing.T) {
	socket := filepath.Join(socketDir(t), "agent.sock")
	fakeCred := func(net.Conn) (server.PeerCred, error) { return server.PeerCred{UID: 1000}, nil }
	serve(t, socket, server.ServerOptionsWith(fakeCred, 0, 1000)...)
	if _, err := apipb.NewAgentClient(dial(t, socket)).NodeStatus(context.Background(), &apipb.NodeStatusRequest{}); err != nil {
		t.Fatalf("uid 1000 explicitly allowed: %v", err)
	}

	socket2 := filepath.Join(socketDir(t), "agent.sock")
	broken := func(net.Conn) (server.PeerCred, error) { return server.PeerCred{}, errors.New("no SO_PEERCRED here") }
	serve(t, socket2, server.ServerOptionsWith(broken)...)
	_, err := apipb.NewAgentClient(dial(t, socket2)).NodeStatus(context.Background(), &apipb.NodeStatusRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no SO_PEERCRED here") {
		t.Fatalf("unreadable credentials: %v, want PermissionDenied with the cause", err)
	}
}

func TestSocketPeerCredRejectsTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := server.SocketPeerCred(c); err == nil {
		t.Fatal("SocketPeerCred accepted a TCP connection")
	}
}

// TestNonRootProcessIsDenied runs a real client as uid 65534 (nobody): with
// the socket as Listen leaves it (0600) the kernel refuses the connection;
// with the socket opened up, the peer-credential check refuses the call.
func TestNonRootProcessIsDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	// The client binary and the socket must be reachable by nobody.
	dir := socketDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "client.test")
	copyFile(t, self, helper, 0o755)
	socket := filepath.Join(dir, "agent.sock")
	serve(t, socket, server.ServerOptions()...)

	runAsNobody := func() string {
		cmd := exec.Command(helper)
		cmd.Env = []string{helperEnv + "=" + socket}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as nobody: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	if out := runAsNobody(); !strings.HasPrefix(out, "unreachable:") || !strings.Contains(out, "permission denied") {
		t.Errorf("nobody against a 0600 socket: %q, want unreachable with permission denied", out)
	}
	if err := os.Chmod(socket, 0o666); err != nil {
		t.Fatal(err)
	}
	if out := runAsNobody(); !strings.HasPrefix(out, "PermissionDenied:") || !strings.Contains(out, "uid 65534") {
		t.Errorf("nobody against an open socket: %q, want PermissionDenied naming uid 65534", out)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
