package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/calyx-net/calyx/e2e/lab"
)

// cmdPod makes or removes a pod in a --kubernetes lab the way a runtime
// would: the API object bound to a host, then its sandbox through the
// calyx plugin with containerd's CNI_ARGS.
func cmdPod(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: calyx-lab pod add NS/NAME --host H [--labels k=v,...] [--ports name:port/PROTO,...] | calyx-lab pod del NS/NAME"
	if len(args) == 0 || (args[0] != "add" && args[0] != "del") {
		return errors.New(use)
	}
	verb := args[0]
	var g globals
	fs := newFlags("pod "+verb, &g, stderr)
	host := fs.String("host", "", "host to bind the pod to (host1..hostN)")
	labels := fs.String("labels", "", "pod labels, k=v,k2=v2")
	ports := fs.String("ports", "", "named container ports, name:port/PROTO (PROTO TCP, UDP or SCTP; default TCP)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New(use)
	}
	ns, name, ok := strings.Cut(fs.Arg(0), "/")
	if !ok || ns == "" || name == "" {
		return fmt.Errorf("%q: want NAMESPACE/NAME", fs.Arg(0))
	}
	l, err := open(&g, stderr)
	if err != nil {
		return err
	}
	if verb == "del" {
		if err := l.DelPod(ctx, ns, name); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pod %s/%s deleted\n", ns, name)
		return nil
	}
	if *host == "" {
		return errors.New(use)
	}
	ls, err := parseLabels(*labels)
	if err != nil {
		return err
	}
	ps, err := parsePorts(*ports)
	if err != nil {
		return err
	}
	w, err := l.AddPod(ctx, lab.Pod{Namespace: ns, Name: name, Host: *host, Labels: ls, Ports: ps})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pod %s/%s on %s (workload %s): %s\n", ns, name, w.Host, w.Name, strings.Join(w.IPs, ", "))
	return nil
}

// parsePorts reads "http:80/TCP,dns:53/UDP".
func parsePorts(s string) ([]corev1.ContainerPort, error) {
	var out []corev1.ContainerPort
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, p := range strings.Split(s, ",") {
		name, rest, ok := strings.Cut(strings.TrimSpace(p), ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("--ports: %q is not name:port/PROTO", p)
		}
		num, proto, _ := strings.Cut(rest, "/")
		if proto == "" {
			proto = "TCP"
		}
		proto = strings.ToUpper(proto)
		if proto != "TCP" && proto != "UDP" && proto != "SCTP" {
			return nil, fmt.Errorf("--ports: %q: protocol %q is not TCP, UDP or SCTP", p, proto)
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("--ports: %q: port %q is not 1-65535", p, num)
		}
		out = append(out, corev1.ContainerPort{Name: name, ContainerPort: int32(n), Protocol: corev1.Protocol(proto)})
	}
	return out, nil
}
