package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/calyx-net/calyx/cni/relay"
)

// RelayFunc serves one CNI invocation relayed by the calyx binary; ctx
// ends when the binary goes away or the server stops.
type RelayFunc func(ctx context.Context, caller PeerCred, req *relay.Request) *relay.Reply

// sniffTimeout bounds how long a new connection may take to say which
// protocol it speaks and, for the relay, to send its request.
const sniffTimeout = 10 * time.Second

// Mux serves the agent socket for both of its clients: gRPC (calyxctl, and
// the CNI service for other tools) and the relay protocol of the calyx
// binary, told apart by a connection's first bytes. Both admit only the
// allowed uids (SO_PEERCRED).
type Mux struct {
	grpc    *grpc.Server
	relay   RelayFunc
	allowed []uint32
	getCred PeerCredFunc
	log     *slog.Logger

	grpcConns *connListener
	ctx       context.Context
	cancel    context.CancelFunc
	relays    sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]bool // not handed to gRPC: closed by Stop
}

// NewMux serves grpcServer (built with ServerOptions of the same uids) and
// relayFn; a nil log discards.
func NewMux(grpcServer *grpc.Server, relayFn RelayFunc, log *slog.Logger, allowedUIDs ...uint32) *Mux {
	return NewMuxWith(grpcServer, relayFn, log, SocketPeerCred, allowedUIDs...)
}

// NewMuxWith is NewMux with another source of peer credentials, for tests.
func NewMuxWith(grpcServer *grpc.Server, relayFn RelayFunc, log *slog.Logger, getCred PeerCredFunc, allowedUIDs ...uint32) *Mux {
	if len(allowedUIDs) == 0 {
		allowedUIDs = []uint32{0}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Mux{
		grpc: grpcServer, relay: relayFn, allowed: slices.Clone(allowedUIDs), getCred: getCred, log: log,
		grpcConns: newConnListener(), ctx: ctx, cancel: cancel, pending: map[net.Conn]bool{},
	}
}

// Serve accepts on l until Stop; l is closed when it returns.
func (m *Mux) Serve(l net.Listener) error {
	m.grpcConns.addr = l.Addr()
	grpcDone := make(chan error, 1)
	go func() { grpcDone <- m.grpc.Serve(m.grpcConns) }()
	defer func() {
		m.grpcConns.Close()
		<-grpcDone
	}()
	go func() {
		<-m.ctx.Done()
		_ = l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			if m.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		if !m.track(conn) {
			_ = conn.Close()
			return nil
		}
		m.relays.Add(1)
		go func() {
			defer m.relays.Done()
			defer m.untrack(conn)
			m.route(conn)
		}()
	}
}

// Stop closes the listener and every connection, cancels the relayed
// calls and waits until their handlers have returned (they undo what they
// did when cancelled, which must finish before what they use shuts down).
func (m *Mux) Stop() {
	m.cancel()
	m.grpc.Stop()
	m.mu.Lock()
	for c := range m.pending {
		_ = c.Close()
	}
	m.pending = nil
	m.mu.Unlock()
	m.relays.Wait()
}

// track records a connection until it is handed on or done; false once
// the mux is stopping.
func (m *Mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == nil {
		return false
	}
	m.pending[c] = true
	return true
}

func (m *Mux) untrack(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pending, c)
}

// route reads a connection's first bytes and hands it to its protocol.
func (m *Mux) route(conn net.Conn) {
	cred, credErr := m.getCred(conn)
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	head, err := r.Peek(len(relay.Magic))
	if err != nil {
		_ = conn.Close()
		return
	}
	if string(head) != relay.Magic {
		_ = conn.SetReadDeadline(time.Time{})
		sc := &sniffedConn{Conn: conn, r: r, cred: cred, credErr: credErr}
		m.untrack(conn)
		if !m.grpcConns.deliver(sc) {
			_ = conn.Close()
		}
		return
	}
	_, _ = r.Discard(len(relay.Magic))
	m.serveRelay(conn, r, cred, credErr)
}

func (m *Mux) serveRelay(conn net.Conn, r *bufio.Reader, cred PeerCred, credErr error) {
	defer conn.Close()
	req, err := relay.ReadRequest(r)
	if err != nil {
		m.log.Warn("unreadable relay request on the agent socket", "pid", cred.PID, "err", err)
		return
	}
	var rep *relay.Reply
	if err := authorizeCred(cred, credErr, m.allowed); err != nil {
		rep = &relay.Reply{Failed: true, Stdout: relay.ErrorJSON(999, "calyx agent refused the call; the plugin must run as root", err.Error())}
	} else {
		_ = conn.SetReadDeadline(time.Time{})
		ctx, cancel := context.WithCancel(m.ctx)
		defer cancel()
		// The binary sends nothing more: a read returning means it is gone
		// (killed by its runtime), and the call is cancelled.
		go func() {
			var b [1]byte
			_, _ = conn.Read(b[:])
			cancel()
		}()
		rep = m.relay(ctx, cred, req)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(sniffTimeout))
	if err := relay.WriteReply(conn, rep); err != nil {
		m.log.Warn("relay reply not delivered", "pid", cred.PID, "command", req.Getenv("CNI_COMMAND"), "err", err)
	}
}

// authorizeCred is authorize for a connection's credentials.
func authorizeCred(cred PeerCred, credErr error, allowed []uint32) error {
	if credErr != nil {
		return fmt.Errorf("calyx agent: cannot identify caller: %w", credErr)
	}
	if !slices.Contains(allowed, cred.UID) {
		return fmt.Errorf("calyx agent: uid %d (pid %d) may not call the agent; allowed uids: %v", cred.UID, cred.PID, allowed)
	}
	return nil
}

// sniffedConn is a connection whose first bytes were read to choose the
// protocol: reads start with them again. It carries the credentials read
// at accept time for the gRPC handshake.
type sniffedConn struct {
	net.Conn
	r       *bufio.Reader
	cred    PeerCred
	credErr error
}

func (c *sniffedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener hands connections to grpc.Server.Serve.
type connListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
