package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/calyx-net/calyx/e2e/lab"
)

// stop and start act on one process of the lab by the name `status`
// shows: an etcd member (etcd1..etcdN) or a host's agent (agent-hostN, or
// just hostN).

func cmdStop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("stop", &g, stderr)
	kill := fs.Bool("kill", false, "SIGKILL at once, as a crash would (default: SIGTERM, SIGKILL after a grace period)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: calyx-lab stop etcdN|agent-hostN|kube-controllers[N] [--kill]")
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	name := fs.Arg(0)
	switch host, isAgent := agentTarget(name); {
	case isAgent && *kill:
		err = l.KillAgent(host)
	case isAgent:
		err = l.StopAgent(host)
	case strings.HasPrefix(name, "etcd"):
		err = l.StopEtcdMember(name, *kill)
	case kubeControllersTarget(name) > 0:
		err = l.StopKubeControllers(kubeControllersTarget(name), *kill)
	default:
		return fmt.Errorf("unknown process %q: use etcdN, agent-hostN or kube-controllers[N] (see calyx-lab status)", name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s stopped\n", name)
	return nil
}

func cmdStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var g globals
	fs := newFlags("start", &g, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: calyx-lab start etcdN|agent-hostN|kube-controllers[N]")
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	name := fs.Arg(0)
	switch host, isAgent := agentTarget(name); {
	case isAgent:
		err = l.StartAgent(ctx, host)
	case strings.HasPrefix(name, "etcd"):
		err = l.StartEtcdMember(ctx, name)
	case kubeControllersTarget(name) > 0:
		err = l.StartKubeControllers(kubeControllersTarget(name))
	default:
		return fmt.Errorf("unknown process %q: use etcdN, agent-hostN or kube-controllers[N] (see calyx-lab status)", name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s started\n", name)
	return nil
}

// kubeControllersTarget reads "kube-controllers" (1) or
// "kube-controllers2"; 0 for anything else.
func kubeControllersTarget(name string) int {
	for i := 1; i <= 3; i++ {
		if name == lab.KubeControllersName(i) {
			return i
		}
	}
	return 0
}

// agentTarget reads "agent-host2" or "host2" as host2's agent.
func agentTarget(name string) (string, bool) {
	host := strings.TrimPrefix(name, "agent-")
	return host, strings.HasPrefix(host, "host")
}
