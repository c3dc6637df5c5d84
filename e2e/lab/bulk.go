package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
)

// Up makes many workloads at once (--hosts 50 --workloads 10 is 500), the
// way the container runtimes of 50 hosts would: in parallel. What a
// runtime does for each (a namespace, then CNI ADD through the real
// plugin) stays; what is the lab's own bookkeeping is done once for all:
// one state save before (every namespace and workload recorded, so that a
// crash leaves nothing unknown), one `ip -batch` for the namespaces, one
// save after.

// workloadSpec is one workload to make.
type workloadSpec struct {
	name, host string
	labels     map[string]string
}

// bulkParallel is how many CNI ADDs run at once: enough to overlap the
// plugin's exec, the agent's etcd round trips and its kernel writes, not
// so many that they only queue for the CPUs.
func bulkParallel() int { return max(4, 4*runtime.NumCPU()) }

// addWorkloads makes the workloads; the caller holds l.mu. On error some
// may be made and every one is recorded: Down (or Up's own clean-up)
// removes them.
func (l *Lab) addWorkloads(ctx context.Context, specs []workloadSpec) error {
	if len(specs) == 0 {
		return nil
	}
	if l.opts.SkipAgents {
		return errors.New("this lab runs no agents (SkipAgents): workloads cannot be wired")
	}
	type job struct {
		w    Workload
		h    Host
		cni  *libcni.CNIConfig
		list *libcni.NetworkConfigList
	}
	hostCNI := map[string]*job{}
	jobs := make([]job, 0, len(specs))
	var nss []string
	for _, s := range specs {
		if err := validateWorkloadName(s.name); err != nil {
			return err
		}
		if _, ok := l.st.workload(s.name); ok {
			return fmt.Errorf("workload %q already exists", s.name)
		}
		h, ok := l.st.host(s.host)
		if !ok {
			return fmt.Errorf("no host %q in this lab", s.host)
		}
		hc := hostCNI[h.Name]
		if hc == nil {
			cni, list, err := l.cniFor(*h)
			if err != nil {
				return err
			}
			hc = &job{h: *h, cni: cni, list: list}
			hostCNI[h.Name] = hc
		}
		w := Workload{Name: s.name, Host: h.Name, Netns: l.names.workload(s.name), ContainerID: containerID(l.names.prefix, s.name), Labels: s.labels}
		l.st.Workloads = append(l.st.Workloads, w)
		l.st.addNamespace(w.Netns)
		nss = append(nss, w.Netns)
		jobs = append(jobs, job{w: w, h: *h, cni: hc.cni, list: hc.list})
	}
	if err := l.save(); err != nil {
		return err
	}
	if err := addNamespaces(ctx, nss); err != nil {
		return err
	}
	// Round robin over the hosts: every host's first ADD (which claims its
	// first block) comes early, and no host's agent gets them all at once.
	rank, seen := make(map[string]int, len(jobs)), map[string]int{}
	for _, j := range jobs {
		rank[j.w.Name] = seen[j.w.Host]
		seen[j.w.Host]++
	}
	slices.SortStableFunc(jobs, func(a, b job) int { return rank[a.w.Name] - rank[b.w.Name] })

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, bulkParallel())
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-actx.Done():
				return
			}
			defer func() { <-sem }()
			ips, err := cniAdd(actx, j.cni, j.list, j.w)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if len(errs) == 0 {
					cancel() // the first failure stops the rest
				}
				errs = append(errs, fmt.Errorf("CNI ADD of workload %s on %s: %w", j.w.Name, j.w.Host, err))
				return
			}
			cur, _ := l.st.workload(j.w.Name)
			cur.IPs, cur.Wired = ips, true
		}()
	}
	wg.Wait()
	if err := l.save(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	l.log.Info("workloads added", "count", len(jobs), "parallel", bulkParallel())
	return nil
}

// cniAdd runs CNI ADD for w and returns its addresses.
func cniAdd(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, w Workload) ([]string, error) {
	addCtx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	res, err := cni.AddNetworkList(addCtx, list, cniRuntime(w))
	if err != nil {
		return nil, err
	}
	return resultIPs(res)
}

// addNamespaces creates the namespaces with one `ip -batch` and brings
// their loopback up with netlink from inside each: two processes per
// namespace fewer than `ip netns add` and `ip -n NS link set lo up`.
func addNamespaces(ctx context.Context, nss []string) error {
	var in bytes.Buffer
	for _, ns := range nss {
		fmt.Fprintf(&in, "netns add %s\n", ns)
	}
	ip, err := lookTool("ip")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, ip, "-batch", "-")
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating %d namespaces: %w: %s", len(nss), err, strings.TrimSpace(string(out)))
	}
	for _, ns := range nss {
		if err := loopbackUp(ns); err != nil {
			return err
		}
	}
	return nil
}

func loopbackUp(ns string) error {
	return inNamespace(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("loopback up in %s: %w", ns, err)
		}
		return nil
	})
}
