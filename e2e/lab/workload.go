package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// CNINetworkName is the name of the network in the lab's conflists.
const CNINetworkName = "calyx"

// cniTimeout bounds one CNI call (the plugin waits for the agent).
const cniTimeout = 60 * time.Second

// Conflist is the CNI network configuration list a runtime on host would
// use: the calyx plugin, talking to that host's agent, with the labels
// capability (as deploy/cni/10-calyx.conflist, with the socket moved).
func Conflist(h Host) []byte {
	conf := map[string]any{
		"cniVersion": "1.1.0",
		"name":       CNINetworkName,
		"plugins": []any{map[string]any{
			"type":         PluginBinary,
			"agentSocket":  h.AgentSocket,
			"mtu":          1500,
			"capabilities": map[string]bool{"labels": true},
		}},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return b
}

// cniRuntime is what a runtime hands libcni for one workload.
func cniRuntime(w Workload) *libcni.RuntimeConf {
	labels := map[string]any{}
	for k, v := range w.Labels {
		labels[k] = v
	}
	ns, pod := LabNamespace, w.Name
	if w.PodName != "" {
		ns, pod = w.PodNamespace, w.PodName
	}
	return &libcni.RuntimeConf{
		ContainerID: w.ContainerID,
		NetNS:       netnsPath(w.Netns),
		IfName:      "eth0",
		// What containerd passes.
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", ns},
			{"K8S_POD_NAME", pod},
			{"K8S_POD_INFRA_CONTAINER_ID", w.ContainerID},
		},
		CapabilityArgs: map[string]any{"labels": labels},
	}
}

// cniFor returns libcni and the parsed conflist for host h. The conflist is
// also written to the lab directory, for people who want to replay a call
// with cnitool.
func (l *Lab) cniFor(h Host) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	raw := Conflist(h)
	confDir := filepath.Join(cniDir(l.dir), "net.d", h.Name)
	if err := os.MkdirAll(confDir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(confDir, "10-calyx.conflist"), raw, 0o644)
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("lab conflist: %w", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{l.opts.BinDir}, filepath.Join(cniDir(l.dir), "cache"), nil)
	return cni, list, nil
}

// containerID is 64 hex digits, like a container runtime's IDs: unique in
// its first 12 characters too, which is all some names keep of it.
func containerID(prefix, name string) string {
	sum := sha256.Sum256([]byte(prefix + name))
	return hex.EncodeToString(sum[:])
}

// AddWorkload creates a workload namespace on host and wires it through the
// calyx CNI plugin (CNI ADD via libcni). labels go in the "labels"
// capability argument. In a Kubernetes lab it is the pod lab/NAME (AddPod).
func (l *Lab) AddWorkload(ctx context.Context, name, host string, labels map[string]string) (Workload, error) {
	var w Workload
	err := l.locked(ctx, func() error {
		var err error
		w, err = l.addWorkload(ctx, name, host, labels)
		return err
	})
	return w, err
}

func (l *Lab) addWorkload(ctx context.Context, name, host string, labels map[string]string) (w Workload, err error) {
	if l.opts.Kubernetes {
		return l.addPod(ctx, Pod{Namespace: LabNamespace, Name: name, Host: host, Labels: labels})
	}
	if err := validateWorkloadName(name); err != nil {
		return Workload{}, err
	}
	return l.addWorkloadOf(ctx, Workload{Name: name, Host: host, Labels: labels})
}

// addWorkloadOf makes workload w (Name, Host, Labels and its pod, if
// any, set); the caller holds l.mu.
func (l *Lab) addWorkloadOf(ctx context.Context, w Workload) (Workload, error) {
	name, host := w.Name, w.Host
	if l.opts.SkipAgents {
		return Workload{}, errors.New("this lab runs no agents (SkipAgents): workloads cannot be wired")
	}
	if _, ok := l.st.workload(name); ok {
		return Workload{}, fmt.Errorf("workload %q already exists", name)
	}
	h, ok := l.st.host(host)
	if !ok {
		return Workload{}, fmt.Errorf("no host %q in this lab (hosts: host1..host%d)", host, len(l.st.Hosts))
	}
	w.Host, w.Netns, w.ContainerID = h.Name, l.names.workload(name), containerID(l.names.prefix, name)
	l.st.Workloads = append(l.st.Workloads, w)
	if err := l.addNamespace(ctx, w.Netns); err != nil {
		return Workload{}, l.undoWorkload(w, err)
	}
	cni, list, err := l.cniFor(*h)
	if err != nil {
		return Workload{}, l.undoWorkload(w, err)
	}
	addCtx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	res, err := cni.AddNetworkList(addCtx, list, cniRuntime(w))
	if err != nil {
		return Workload{}, l.undoWorkload(w, fmt.Errorf("CNI ADD of workload %s on %s: %w", name, host, err))
	}
	ips, err := resultIPs(res)
	if err != nil {
		return Workload{}, l.undoWorkload(w, fmt.Errorf("CNI ADD of workload %s: %w", name, err))
	}
	cur, _ := l.st.workload(name)
	cur.IPs, cur.Wired = ips, true
	w = *cur
	l.log.Info("workload added", "name", name, "host", host, "ips", ips)
	return w, l.save()
}

// undoWorkload removes a half-made workload (DEL is harmless when the ADD
// never happened) and returns cause.
func (l *Lab) undoWorkload(w Workload, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), cniTimeout)
	defer cancel()
	if h, ok := l.st.host(w.Host); ok {
		if cni, list, err := l.cniFor(*h); err == nil {
			_ = cni.DelNetworkList(ctx, list, cniRuntime(w))
		}
	}
	_ = deleteNamespace(ctx, w.Netns)
	l.st.removeNamespace(w.Netns)
	l.st.removeWorkload(w.Name)
	if err := l.save(); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// resultIPs reads the addresses out of a CNI result of any version.
func resultIPs(res cnitypes.Result) ([]string, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("reading the CNI result: %w", err)
	}
	var ips []string
	for _, c := range r.IPs {
		a, ok := netip.AddrFromSlice(c.Address.IP)
		if !ok {
			continue
		}
		ips = append(ips, a.Unmap().String())
	}
	if len(ips) == 0 {
		return nil, errors.New("the CNI result holds no address")
	}
	return ips, nil
}

// DelWorkload removes a workload: CNI DEL through the plugin, then its
// namespace. When DEL fails the workload is kept, so that it can be tried
// again (or removed by Down).
func (l *Lab) DelWorkload(ctx context.Context, name string) error {
	return l.locked(ctx, func() error {
		w, ok := l.st.workload(name)
		if !ok {
			return fmt.Errorf("no workload %q in this lab", name)
		}
		h, ok := l.st.host(w.Host)
		if !ok {
			return fmt.Errorf("workload %q: its host %q is unknown", name, w.Host)
		}
		cni, list, err := l.cniFor(*h)
		if err != nil {
			return err
		}
		delCtx, cancel := context.WithTimeout(ctx, cniTimeout)
		defer cancel()
		if err := cni.DelNetworkList(delCtx, list, cniRuntime(*w)); err != nil {
			return fmt.Errorf("CNI DEL of workload %s on %s: %w", name, w.Host, err)
		}
		if err := deleteNamespace(ctx, w.Netns); err != nil {
			return err
		}
		l.st.removeNamespace(w.Netns)
		ns, pod := w.PodNamespace, w.PodName
		l.st.removeWorkload(name)
		l.log.Info("workload deleted", "name", name)
		if err := l.save(); err != nil {
			return err
		}
		if !l.opts.Kubernetes {
			return nil
		}
		// Then the pod object, as kubelet does once the sandbox is gone.
		if pod == "" {
			ns, pod = LabNamespace, name
		}
		kc, err := l.KubeClient()
		if err != nil {
			return err
		}
		return deletePodObject(ctx, kc, ns, pod)
	})
}
