package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// demoPolicy lets workloads labelled app=w1 reach app=w2 workloads on TCP
// 8080, and nothing else: once a policy selects app=w2 for ingress,
// everything it does not allow is dropped.
const demoPolicy = `apiVersion: calyx.dev/v1
kind: Policy
metadata:
  name: demo-w2-ingress
spec:
  selector: app == "w2"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: tcp
    source:
      selector: app == "w1"
    destination:
      ports: [8080]
`

// cmdDemo is `make demo`: up (3 hosts, 2 workloads each, BIRD), node status
// of one host, the ping matrix, a policy with one connection blocked and
// one allowed, then down. The lab goes whatever happens, Ctrl-C included.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var g globals
	fs := newFlags("demo", &g, stderr)
	binDir := fs.String("bin-dir", lab.DefaultBinDir(), "directory of calyx-agent, calyx and calyxctl")
	keep := fs.Bool("keep-logs", false, "keep the lab directory (logs) after a successful demo")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !fs.Changed("dir") {
		g.dir = filepath.Join(lab.DefaultDirRoot, "demo")
	}
	start := time.Now()
	o := lab.Options{Dir: g.dir, Hosts: 3, Workloads: 2, Peer: lab.PeerBird, BinDir: *binDir, Logger: g.logger(stderr)}
	if err := lab.CheckDeps(o, lab.CalyxctlBinary); err != nil {
		return err
	}
	// The demo owns its directory: sweep what an earlier demo left.
	if err := lab.DownDir(g.dir, true, nil); err != nil {
		return fmt.Errorf("removing an earlier demo lab: %w", err)
	}

	step(stdout, "calyx-lab up --hosts 3 --workloads 2 --peer bird")
	l, err := lab.Up(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			_ = lab.DownDir(g.dir, true, nil)
			return errors.New("interrupted; the lab was removed")
		}
		return fmt.Errorf("%w\nlogs: %s/logs", err, g.dir)
	}
	defer func() {
		step(stdout, "calyx-lab down")
		interrupted := ctx.Err() != nil
		if interrupted {
			err = errors.New("interrupted")
		}
		// Keep the logs only when something went wrong, to read why.
		purge := (err == nil && !*keep) || interrupted
		if downErr := lab.DownDir(g.dir, purge, nil); downErr != nil {
			err = errors.Join(err, downErr)
		} else if !purge {
			fmt.Fprintf(stdout, "lab removed; logs kept in %s/logs\n", g.dir)
		} else {
			fmt.Fprintln(stdout, "lab removed, nothing left behind")
		}
		if err == nil {
			fmt.Fprintf(stdout, "demo done in %s\n", time.Since(start).Round(100*time.Millisecond))
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = l.WaitEstablished(wctx)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "up and every BGP session Established after %s\n", time.Since(start).Round(100*time.Millisecond))

	if err := demoTLSStep(ctx, l, stdout); err != nil {
		return err
	}

	h1, _ := l.Host("host1")
	step(stdout, "calyxctl node status   (on host1)")
	if err := runIn(ctx, l, "host1", stdout, "calyxctl", "node", "status", "--agent-socket", h1.AgentSocket); err != nil {
		return err
	}

	step(stdout, "ip route   (on host1: proto 202 = learned over BGP from host2, host3 and the ToR; 201 = its own workloads and block)")
	if err := runIn(ctx, l, "host1", stdout, "ip", "route", "show"); err != nil {
		return err
	}

	step(stdout, "calyx-lab ping   (every workload to every other, across the 3 hosts)")
	eps := l.Endpoints(false)
	m := l.PingMatrix(ctx, eps, eps, 8)
	fmt.Fprint(stdout, m.String())
	if f := m.Failed(); len(f) > 0 {
		return fmt.Errorf("%d pairs did not answer", len(f))
	}
	return demoPolicyStep(ctx, l, stdout)
}

// demoTLSStep shows that etcd takes only clients with a certificate from
// the lab's CA: calyxctl with the admin certificate reads, without it is
// refused at once.
func demoTLSStep(ctx context.Context, l *lab.Lab, stdout io.Writer) error {
	step(stdout, fmt.Sprintf("etcd at %s: mutual TLS (CA, etcd's certificate and one client certificate per host in %s/pki)", lab.EtcdEndpoint, l.Dir()))
	step(stdout, "calyxctl get nodes   (on host1, with the admin certificate)")
	if err := runIn(ctx, l, "host1", stdout, "calyxctl", "get", "nodes"); err != nil {
		return err
	}
	step(stdout, "calyxctl get nodes   (on host1, without a client certificate)")
	cmd, err := l.Command(ctx, "host1", "calyxctl", "get", "nodes", "--timeout", "10s")
	if err != nil {
		return err
	}
	cmd.Env = append(cmd.Env, "CALYX_ETCD_CERT=", "CALYX_ETCD_KEY=")
	cmd.Stdout, cmd.Stderr = stdout, stdout
	if cmd.Run() == nil {
		return errors.New("etcd answered calyxctl without a client certificate")
	}
	fmt.Fprintln(stdout, "refused, as it should be")
	return nil
}

func demoPolicyStep(ctx context.Context, l *lab.Lab, stdout io.Writer) error {
	server, err := l.Workload("h2-w2")
	if err != nil {
		return err
	}
	ln, err := l.Listen(server.Name, ":8080")
	if err != nil {
		return err
	}
	defer ln.Close()
	go serveHello(ln)
	target := net.JoinHostPort(server.IP(), "8080")

	policyFile := filepath.Join(l.Dir(), "demo-policy.yaml")
	if err := os.WriteFile(policyFile, []byte(demoPolicy), 0o644); err != nil {
		return err
	}
	step(stdout, "calyxctl apply -f demo-policy.yaml   (app=w2 accepts tcp/8080 from app=w1 only)")
	fmt.Fprint(stdout, demoPolicy)
	if err := runIn(ctx, l, "host1", stdout, "calyxctl", "apply", "-f", policyFile); err != nil {
		return err
	}

	// The agents program the policy asynchronously: poll for the block.
	blocked := "h3-w2"
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err = tryConnect(ctx, l, blocked, target); err != nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s (app=w2) still reaches %s %s after the policy", blocked, server.Name, target)
		}
		time.Sleep(300 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "%s (app=w2) -> %s %s: BLOCKED (%v)\n", blocked, server.Name, target, err)
	res, err := tryConnect(ctx, l, "h1-w1", target)
	if err != nil {
		return fmt.Errorf("h1-w1 (app=w1) -> %s %s: %w, but the policy allows it", server.Name, target, err)
	}
	fmt.Fprintf(stdout, "h1-w1 (app=w1) -> %s %s: ALLOWED (%s)\n", server.Name, target, res)
	return nil
}

// tryConnect opens a TCP connection from a workload and reads the greeting.
func tryConnect(ctx context.Context, l *lab.Lab, from, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := l.Dial(ctx, from, addr)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "", errors.New("connection refused")
	case isTimeout(err):
		return "", errors.New("no answer within 1.5s: the packets are dropped")
	case err != nil:
		return "", err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	return fmt.Sprintf("connected in %s, server said %q", time.Since(start).Round(10*time.Microsecond), buf[:n]), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func serveHello(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello from h2-w2"))
		c.Close()
	}
}

func runIn(ctx context.Context, l *lab.Lab, target string, stdout io.Writer, argv ...string) error {
	cmd, err := l.Command(ctx, target, argv...)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = stdout, stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v in %s: %w", argv, target, err)
	}
	return nil
}

func step(w io.Writer, what string) { fmt.Fprintf(w, "\n==> %s\n", what) }
