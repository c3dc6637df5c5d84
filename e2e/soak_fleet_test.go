package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"sync"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"

	"github.com/calyx-net/calyx/e2e/lab"
)

// Kinds of soak workloads.
const (
	soakProbe    = "probe"    // long-lived, pings its peers on other hosts all the time
	soakSentinel = "sentinel" // long-lived, the policy toggles are verified on them
	soakChurned  = "churn"
)

// soakWL is a workload as the soak sees it.
type soakWL struct {
	Name, Host, IP, ContainerID, Kind string
	Labels                            map[string]string
}

// soakFleet is what should exist: the workloads the lab wired and the
// test has not deleted, the DELs owed for ADDs that failed, and the hosts
// whose agent is down on purpose. A container runtime retries DEL after a
// failed ADD until it succeeds; the soak does the same, so that a leak it
// finds is the agent's and not an artefact of a runtime that gave up.
type soakFleet struct {
	mu         sync.Mutex
	live       map[string]soakWL
	pendingDel map[string]soakWL
	down       map[string]bool
	peakAlive  int
}

func newSoakFleet() *soakFleet {
	return &soakFleet{live: map[string]soakWL{}, pendingDel: map[string]soakWL{}, down: map[string]bool{}}
}

func (f *soakFleet) add(w soakWL) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live[w.Name] = w
	f.peakAlive = max(f.peakAlive, f.countLocked(soakChurned))
}

func (f *soakFleet) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, name)
}

func (f *soakFleet) get(name string) (soakWL, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.live[name]
	return w, ok
}

func (f *soakFleet) owe(w soakWL) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pendingDel[w.Name] = w
}

func (f *soakFleet) paid(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pendingDel, name)
}

func (f *soakFleet) owed() []soakWL {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Collect(maps.Values(f.pendingDel))
}

func (f *soakFleet) setDown(host string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[host] = down
}

func (f *soakFleet) isDown(host string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down[host]
}

func (f *soakFleet) countLocked(kind string) int {
	n := 0
	for _, w := range f.live {
		if w.Kind == kind {
			n++
		}
	}
	return n
}

func (f *soakFleet) count(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.countLocked(kind)
}

// snapshot lists the live workloads, sorted by name.
func (f *soakFleet) snapshot() []soakWL {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Collect(maps.Values(f.live))
	slices.SortFunc(out, func(a, b soakWL) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// deletable lists the churned workloads whose agent is up.
func (f *soakFleet) deletable() []soakWL {
	var out []soakWL
	for _, w := range f.snapshot() {
		if w.Kind == soakChurned && !f.isDown(w.Host) {
			out = append(out, w)
		}
	}
	return out
}

func soakFromLab(w lab.Workload, kind string) soakWL {
	return soakWL{Name: w.Name, Host: w.Host, IP: w.IP(), ContainerID: w.ContainerID, Kind: kind, Labels: w.Labels}
}

// soakContainerID is the container ID the lab gives workload name (the
// lab's own derivation; the churn checks that they agree on every ADD, so
// a change there cannot make the soak's DEL retries aim at nothing).
func soakContainerID(prefix, name string) string {
	sum := sha256.Sum256([]byte(prefix + name))
	return hex.EncodeToString(sum[:])
}

// soakCNIDel runs CNI DEL for a workload whose ADD failed (the lab gave up
// on it and removed its namespace), the way a runtime retries it: same
// container ID, same interface, the namespace path even though it is gone.
func soakCNIDel(ctx context.Context, l *lab.Lab, cacheDir string, w soakWL) error {
	h, err := l.Host(w.Host)
	if err != nil {
		return err
	}
	list, err := libcni.ConfListFromBytes(lab.Conflist(h))
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{l.Options().BinDir}, cacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID: w.ContainerID,
		NetNS:       "/run/netns/" + l.Prefix() + "w-" + w.Name,
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "lab"}, {"K8S_POD_NAME", w.Name}},
	}
	return cni.DelNetworkList(ctx, list, rt)
}

// soakCNIGC runs CNI GC on host with the host's live workloads as the valid
// attachments, as a runtime does now and then (containerd, CRI-O): the
// agent must remove every other endpoint of the host, and no live one.
func soakCNIGC(ctx context.Context, l *lab.Lab, cacheDir, host string, live []soakWL) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	list, err := libcni.ConfListFromBytes(lab.Conflist(h))
	if err != nil {
		return err
	}
	args := &libcni.GCArgs{}
	for _, w := range live {
		if w.Host == host {
			args.ValidAttachments = append(args.ValidAttachments, cnitypes.GCAttachment{ContainerID: w.ContainerID, IfName: "eth0"})
		}
	}
	// The cache directory holds no attachment (the soak's DELs and GCs
	// are its own), so libcni only calls the plugin's GC.
	cni := libcni.NewCNIConfigWithCacheDir([]string{l.Options().BinDir}, cacheDir, nil)
	return cni.GCNetworkList(ctx, list, args)
}
