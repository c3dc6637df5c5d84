package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	apipb "github.com/calyx-net/calyx/cni/api"
)

func agentProcName(host string) string { return "agent-" + host }

// AgentArgv is the command line of host h's agent (flags in DESIGN.md).
func AgentArgv(o Options, h Host) []string {
	tls := clientFiles(o.Dir, h.Name)
	argv := []string{
		o.BinDir + "/" + AgentBinary,
		"--node-name", h.Name,
		"--node-ip", h.IP,
		"--etcd-endpoints", strings.Join(etcdEndpoints(o), ","),
		"--etcd-ca", tls.CA, "--etcd-cert", tls.Cert, "--etcd-key", tls.Key,
		"--agent-socket", h.AgentSocket,
		// Each host namespace has its own loopback: no port clash.
		"--health-addr", "127.0.0.1:9099",
		"--metrics-addr", "127.0.0.1:9091",
		"--log-level", o.AgentLogLevel,
	}
	if h.IPv6 != "" {
		argv = append(argv, "--node-ipv6", h.IPv6)
	}
	if o.Kubernetes {
		argv = append(argv, "--kubeconfig", KubeconfigPath(o.Dir, "agent"))
	}
	return append(argv, o.AgentArgs...)
}

// startAgent starts host's agent and waits until it reports ready.
func (l *Lab) startAgent(ctx context.Context, host string) error {
	h, ok := l.st.host(host)
	if !ok {
		return fmt.Errorf("no host %q in this lab", host)
	}
	name := agentProcName(host)
	if p, ok := l.st.proc(name); ok && p.alive() {
		return fmt.Errorf("the agent of %s already runs (pid %d)", host, p.PID)
	}
	if err := os.MkdirAll(hostDir(l.dir, h.Index), 0o755); err != nil {
		return fmt.Errorf("host directory: %w", err)
	}
	if _, err := l.EtcdClientFiles(h.Name); err != nil {
		return err
	}
	// A socket left by a killed agent would make the CNI plugin's first
	// call fail with "connection refused" instead of waiting.
	_ = os.Remove(h.AgentSocket)
	if err := l.startProc(name, h.Netns, AgentArgv(l.opts, *h), h.AgentLog, nil); err != nil {
		return err
	}
	return l.waitAgentReady(ctx, *h)
}

// waitAgentReady polls the agent's NodeStatus until it says ready.
func (l *Lab) waitAgentReady(parent context.Context, h Host) error {
	ctx, cancel := context.WithTimeout(parent, l.opts.StepTimeout)
	defer cancel()
	var last error
	for {
		p, ok := l.st.proc(agentProcName(h.Name))
		if ok && !p.alive() {
			return errProcDied(*p)
		}
		st, err := nodeStatus(ctx, h)
		switch {
		case err != nil:
			last = err
		case !st.GetReady():
			last = fmt.Errorf("agent says not ready (datastore in sync: %v)", st.GetDatastoreInSync())
		default:
			return nil
		}
		select {
		case <-ctx.Done():
			return waitFailed(parent, "the agent of "+h.Name, l.opts.StepTimeout, last, "log: "+h.AgentLog)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// NodeStatus asks host's agent for its status over its socket.
func (l *Lab) NodeStatus(ctx context.Context, host string) (*apipb.NodeStatusReply, error) {
	h, err := l.Host(host)
	if err != nil {
		return nil, err
	}
	return nodeStatus(ctx, h)
}

func nodeStatus(ctx context.Context, h Host) (*apipb.NodeStatusReply, error) {
	host := h.Name
	if _, err := os.Stat(h.AgentSocket); err != nil {
		return nil, fmt.Errorf("agent socket of %s: %w", host, err)
	}
	conn, err := grpc.NewClient("unix://"+h.AgentSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("agent socket of %s: %w", host, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := apipb.NewAgentClient(conn).NodeStatus(ctx, &apipb.NodeStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("node status of %s: %w", host, err)
	}
	return st, nil
}

// StopAgent stops host's agent with SIGTERM (SIGKILL after a grace
// period). The agent keeps the dataplane as it is when it stops.
func (l *Lab) StopAgent(host string) error {
	return l.locked(context.Background(), func() error { return l.stopAgent(host) })
}

func (l *Lab) stopAgent(host string) error {
	if _, ok := l.st.host(host); !ok {
		return fmt.Errorf("no host %q in this lab", host)
	}
	p, ok := l.st.proc(agentProcName(host))
	if !ok {
		return nil
	}
	if err := stopProc(*p, 10*time.Second); err != nil {
		return err
	}
	l.st.removeProc(p.Name)
	return l.save()
}

// KillAgent kills host's agent with SIGKILL, as a crash would.
func (l *Lab) KillAgent(host string) error {
	return l.locked(context.Background(), func() error {
		p, ok := l.st.proc(agentProcName(host))
		if !ok || !p.alive() {
			return fmt.Errorf("the agent of %s does not run", host)
		}
		signalGroup(p.PID, 9)
		if !waitGone(*p, 5*time.Second) {
			return fmt.Errorf("the agent of %s (pid %d) survived SIGKILL", host, p.PID)
		}
		l.st.removeProc(p.Name)
		return l.save()
	})
}

// StartAgent starts host's agent and waits until it is ready.
func (l *Lab) StartAgent(ctx context.Context, host string) error {
	return l.locked(ctx, func() error { return l.startAgent(ctx, host) })
}

// RestartAgent stops host's agent and starts it again.
func (l *Lab) RestartAgent(ctx context.Context, host string) error {
	return l.locked(ctx, func() error {
		if err := l.stopAgent(host); err != nil {
			return err
		}
		return l.startAgent(ctx, host)
	})
}

// expectedPeers is how many BGP sessions host i should have Established:
// the mesh peers with every other host; with reflectors a reflector peers
// with every other host and a client with every reflector; plus the ToR
// (two sessions in a dual-stack lab: IPv4 and IPv6). Node-to-node sessions
// run over IPv4 and carry both families.
func expectedPeers(o Options, i int) int {
	n := o.Hosts - 1
	if o.Reflectors > 0 && i > o.Reflectors {
		n = o.Reflectors
	}
	if o.Peer == PeerBird {
		n++
		if o.IPv6 {
			n++
		}
	}
	return n
}

// WaitEstablished waits until every agent reports the BGP sessions it
// should have (see expectedPeers) Established and none other, and the ToR,
// if any, has every host's session Established.
func (l *Lab) WaitEstablished(ctx context.Context) error {
	if l.opts.SkipAgents {
		return errors.New("this lab runs no agents (SkipAgents)")
	}
	var last error
	for {
		last = l.checkEstablished(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("BGP sessions not all Established: %w", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (l *Lab) checkEstablished(ctx context.Context) error {
	var errs []error
	hosts := l.Hosts()
	for _, h := range hosts {
		st, err := nodeStatus(ctx, h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		up := 0
		for _, p := range st.GetBgpPeers() {
			if p.GetState() == apipb.BGPSessionState_BGP_SESSION_STATE_ESTABLISHED {
				up++
			} else {
				errs = append(errs, fmt.Errorf("%s: peer %s is %s", h.Name, p.GetAddress(), p.GetState()))
			}
		}
		if want := expectedPeers(l.opts, h.Index); up < want {
			errs = append(errs, fmt.Errorf("%s: %d of %d BGP sessions Established", h.Name, up, want))
		}
	}
	if l.opts.Peer == PeerBird {
		up, err := l.BirdEstablished(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, h := range hosts {
			if !up[h.Name] {
				errs = append(errs, fmt.Errorf("tor: session to %s not Established", h.Name))
			}
			if l.opts.IPv6 && !up[birdProtocol6(h.Name)] {
				errs = append(errs, fmt.Errorf("tor: IPv6 session to %s (%s) not Established", h.Name, h.IPv6))
			}
		}
	}
	return errors.Join(errs...)
}
