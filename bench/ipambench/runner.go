package ipambench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
)

const benchNodes = 3

type runner struct {
	ctx      context.Context
	s        settings
	log      *slog.Logger
	dir      string
	endpoint string
	clients  []*datastore.Client
	ipams    []*ipam.IPAM
}

func (r *runner) close() {
	for _, c := range r.clients {
		c.Close()
	}
}

func nodeName(n int) string { return fmt.Sprintf("bench-node-%d", n) }

// setup writes the pool, the nodes and an IPAMConfig that lets a node hold
// the blocks a round needs, and gives each node its own IPAM on its own
// etcd connection (as each agent has), warmed up by one allocation.
func (r *runner) setup() error {
	admin, err := datastore.NewClient(datastore.Config{Endpoints: []string{r.endpoint}})
	if err != nil {
		return err
	}
	defer admin.Close()
	meta := func(k datastore.Kind, name string) (datastore.TypeMeta, datastore.Metadata) {
		return datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: k}, datastore.Metadata{Name: name}
	}
	tm, md := meta(datastore.KindIPPool, "bench")
	rs := []datastore.Resource{&datastore.IPPool{TypeMeta: tm, Metadata: md, Spec: datastore.IPPoolSpec{CIDR: "10.128.0.0/14", BlockSize: 26}}}
	tm, md = meta(datastore.KindIPAMConfig, datastore.DefaultSingletonName)
	rs = append(rs, &datastore.IPAMConfig{TypeMeta: tm, Metadata: md, Spec: datastore.IPAMConfigSpec{MaxBlocksPerHost: 1000}})
	for n := range benchNodes {
		tm, md = meta(datastore.KindNode, nodeName(n))
		rs = append(rs, &datastore.Node{TypeMeta: tm, Metadata: md, Spec: datastore.NodeSpec{Address: fmt.Sprintf("198.18.0.%d", n+1)}})
	}
	if err := admin.WriteAll(r.ctx, rs, datastore.ModeApply); err != nil {
		return fmt.Errorf("writing the benchmark's pool and nodes: %w", err)
	}
	for n := range benchNodes {
		c, err := datastore.NewClient(datastore.Config{Endpoints: []string{r.endpoint}})
		if err != nil {
			return err
		}
		r.clients = append(r.clients, c)
		im := ipam.New(c, r.log)
		r.ipams = append(r.ipams, im)
		h := fmt.Sprintf("warmup-%d", n)
		if _, err := im.Allocate(r.ctx, ipam.Request{Handle: h, Node: nodeName(n)}); err != nil {
			return fmt.Errorf("warm-up allocation: %w", err)
		}
		if err := im.Release(r.ctx, h); err != nil {
			return err
		}
	}
	// One host-local run loads the binary into the page cache.
	_, err = r.hostLocalAdd(filepath.Join(r.dir, "hl-warmup"), "warmup")
	return err
}

// load is the shape of one round: callers per node and allocations per
// node.
type load struct{ workers, perNode int }

// burst runs l.workers callers on each of nodes nodes, each doing its share
// of l.perNode allocations with do, and returns allocations per second.
func (r *runner) burst(nodes int, l load, do func(node, worker, k int) error) (float64, error) {
	var wg sync.WaitGroup
	errs := make(chan error, nodes*l.workers)
	start := time.Now()
	for n := range nodes {
		for w := range l.workers {
			share := l.perNode / l.workers
			if w < l.perNode%l.workers {
				share++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range share {
					if err := do(n, w, k); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	if err := errors.Join(drain(errs)...); err != nil {
		return 0, err
	}
	return float64(nodes*l.perNode) / took.Seconds(), nil
}

func drain(ch chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

// calyx times one round of Calyx allocations, then releases them (untimed).
func (r *runner) calyx(round, nodes int, l load) (float64, error) {
	handle := func(n, w, k int) string {
		return fmt.Sprintf("r%d-n%d-%d-%d-w%d-%d.eth0", round, nodes, l.workers, n, w, k)
	}
	rate, err := r.burst(nodes, l, func(n, w, k int) error {
		h := handle(n, w, k)
		got, err := r.ipams[n].Allocate(r.ctx, ipam.Request{Handle: h, Node: nodeName(n), Attrs: ipam.Attributes{Endpoint: h}})
		if err == nil && len(got) != 1 {
			err = fmt.Errorf("handle %s got %v, want one IPv4 address", h, got)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("calyx IPAM: %w", err)
	}
	if _, err := r.burst(nodes, l, func(n, w, k int) error { return r.ipams[n].Release(r.ctx, handle(n, w, k)) }); err != nil {
		return 0, fmt.Errorf("releasing the round's addresses: %w", err)
	}
	return rate, nil
}

// hostLocal times one round of host-local ADDs, one data directory per
// simulated node, then removes the directories (untimed).
func (r *runner) hostLocal(round, nodes int, l load) (float64, error) {
	dataDir := func(n int) string {
		return filepath.Join(r.dir, fmt.Sprintf("hl-r%d-%d-%d-n%d", round, nodes, l.workers, n))
	}
	rate, err := r.burst(nodes, l, func(n, w, k int) error {
		_, err := r.hostLocalAdd(dataDir(n), fmt.Sprintf("r%d-w%d-%d", round, w, k))
		return err
	})
	for n := range nodes {
		os.RemoveAll(dataDir(n))
	}
	return rate, err
}

// hostLocalAdd runs one host-local ADD as a runtime would: exec with the
// CNI_* environment and the network config on stdin.
func (r *runner) hostLocalAdd(dataDir, containerID string) (netip.Prefix, error) {
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ipambench","type":"ptp","ipam":{"type":"host-local","ranges":[[{"subnet":"10.250.0.0/16"}]],"dataDir":%q}}`, dataDir)
	cmd := exec.CommandContext(r.ctx, HostLocalPath)
	cmd.Stdin = bytes.NewReader([]byte(conf))
	cmd.Env = []string{
		"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + containerID, "CNI_NETNS=/var/run/netns/ipambench-unused",
		"CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("host-local ADD %s: %w: %s%s", containerID, err, out, stderr.Bytes())
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
		return netip.Prefix{}, fmt.Errorf("host-local ADD %s: unexpected result %q", containerID, out)
	}
	return netip.ParsePrefix(res.IPs[0].Address)
}

// conflicts is how many transactions lost a race, over every IPAM.
func (r *runner) conflicts() int64 {
	var n int64
	for _, im := range r.ipams {
		n += im.LostRaces()
	}
	return n
}
