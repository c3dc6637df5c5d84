package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Namespace resolves an exec target to a namespace name: a host ("host1"),
// a workload name, "etcd" (the first member), "etcd1".."etcdN", "tor" or
// "fabric".
func (l *Lab) Namespace(target string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h, ok := l.st.host(target); ok {
		return h.Netns, nil
	}
	if w, ok := l.st.workload(target); ok {
		return w.Netns, nil
	}
	if m, err := l.memberByName(target); err == nil {
		return m.Netns, nil
	}
	switch target {
	case "fabric":
		return l.names.fabric(), nil
	case "etcd":
		return l.names.etcd(), nil
	case "tor":
		if l.opts.Peer == PeerBird {
			return l.names.tor(), nil
		}
	}
	members := "etcd"
	if l.opts.EtcdMembers > 1 {
		members = fmt.Sprintf("etcd1..etcd%d", l.opts.EtcdMembers)
	}
	return "", fmt.Errorf("unknown target %q: use a host (host1..host%d), a workload, %s, fabric%s",
		target, len(l.st.Hosts), members, map[bool]string{true: " or tor", false: ""}[l.opts.Peer == PeerBird])
}

// Command returns a command that runs argv inside target's namespace, with
// the bin dir first in PATH (so `calyxctl` is found) and, for a host,
// CALYX_AGENT_SOCKET pointing at that host's agent; CALYX_ETCD_* and
// ETCDCTL_* point calyxctl and etcdctl at the lab's etcd with the admin
// certificate.
func (l *Lab) Command(ctx context.Context, target string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec %s: no command given", target)
	}
	ns, err := l.Namespace(target)
	if err != nil {
		return nil, err
	}
	ip, err := lookTool("ip")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, ip, append([]string{"netns", "exec", ns}, argv...)...)
	env := os.Environ()
	env = append(env, "PATH="+l.opts.BinDir+":"+os.Getenv("PATH")+":/usr/sbin:/sbin")
	env = append(env, etcdClientEnv(l.opts)...)
	if h, err := l.Host(target); err == nil {
		env = append(env, "CALYX_AGENT_SOCKET="+h.AgentSocket)
	}
	cmd.Env = env
	return cmd, nil
}

// Exec runs argv inside target's namespace and returns its combined output.
func (l *Lab) Exec(target string, argv ...string) (string, error) {
	return l.ExecContext(context.Background(), target, argv...)
}

// ExecContext is Exec with a context.
func (l *Lab) ExecContext(ctx context.Context, target string, argv ...string) (string, error) {
	cmd, err := l.Command(ctx, target, argv...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil {
		return text, fmt.Errorf("exec in %s: %s: %w: %s", target, strings.Join(argv, " "), err, text)
	}
	return text, nil
}
