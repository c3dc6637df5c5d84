package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

const stateVersion = 1

// State is what a lab has made; it is saved to state.json after every
// change, before the change is made, so that Down can undo a lab whose
// maker crashed half way.
type State struct {
	Version int       `json:"version"`
	Prefix  string    `json:"prefix"`
	Created time.Time `json:"created"`
	Options Options   `json:"options"`
	// Ready is set once Up finished.
	Ready bool `json:"ready"`
	// Namespaces lists every namespace made, in order.
	Namespaces []string   `json:"namespaces"`
	Hosts      []Host     `json:"hosts"`
	Processes  []Proc     `json:"processes"`
	Workloads  []Workload `json:"workloads"`
}

// Host is one emulated host.
type Host struct {
	Name  string `json:"name"` // node name: host1
	Index int    `json:"index"`
	IP    string `json:"ip"`
	// IPv6 is the host's IPv6 fabric address in a dual-stack lab.
	IPv6        string `json:"ipv6,omitempty"`
	Netns       string `json:"netns"`
	AgentSocket string `json:"agentSocket"`
	AgentLog    string `json:"agentLog"`
	Reflector   bool   `json:"reflector,omitempty"`
}

// Workload is one workload namespace wired by the calyx CNI plugin.
type Workload struct {
	Name        string            `json:"name"`
	Host        string            `json:"host"`
	Netns       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	Labels      map[string]string `json:"labels,omitempty"`
	// IPs are the addresses from the CNI result, without prefix length.
	IPs []string `json:"ips"`
	// Wired is false while the CNI ADD has not succeeded yet.
	Wired bool `json:"wired"`
	// PodNamespace and PodName name its pod in a Kubernetes lab (the
	// CNI_ARGS of its ADD); empty: namespace "lab", the workload's name.
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
}

// IP is the workload's first address ("" when it has none).
func (w Workload) IP() string {
	if len(w.IPs) == 0 {
		return ""
	}
	return w.IPs[0]
}

// IPv4 is the workload's first IPv4 address ("" when it has none).
func (w Workload) IPv4() string { return w.firstIP(false) }

// IPv6 is the workload's first IPv6 address ("" when it has none).
func (w Workload) IPv6() string { return w.firstIP(true) }

func (w Workload) firstIP(v6 bool) string {
	for _, s := range w.IPs {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() == v6 {
			return s
		}
	}
	return ""
}

// Proc is one detached process of the lab.
type Proc struct {
	Name string `json:"name"` // etcd, bird, agent-host1
	PID  int    `json:"pid"`
	// StartTicks is the process start time from /proc/PID/stat, so that a
	// reused PID is never killed by mistake.
	StartTicks uint64   `json:"startTicks"`
	Netns      string   `json:"netns"`
	Argv       []string `json:"argv"`
	Log        string   `json:"log"`
}

func (s *State) host(name string) (*Host, bool) {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i], true
		}
	}
	return nil, false
}

func (s *State) workload(name string) (*Workload, bool) {
	for i := range s.Workloads {
		if s.Workloads[i].Name == name {
			return &s.Workloads[i], true
		}
	}
	return nil, false
}

func (s *State) proc(name string) (*Proc, bool) {
	for i := range s.Processes {
		if s.Processes[i].Name == name {
			return &s.Processes[i], true
		}
	}
	return nil, false
}

func (s *State) setProc(p Proc) {
	if cur, ok := s.proc(p.Name); ok {
		*cur = p
		return
	}
	s.Processes = append(s.Processes, p)
}

func (s *State) removeProc(name string) {
	s.Processes = slices.DeleteFunc(s.Processes, func(p Proc) bool { return p.Name == name })
}

func (s *State) removeWorkload(name string) {
	s.Workloads = slices.DeleteFunc(s.Workloads, func(w Workload) bool { return w.Name == name })
}

func (s *State) addNamespace(ns string) {
	if !slices.Contains(s.Namespaces, ns) {
		s.Namespaces = append(s.Namespaces, ns)
	}
}

func (s *State) removeNamespace(ns string) {
	s.Namespaces = slices.DeleteFunc(s.Namespaces, func(n string) bool { return n == ns })
}

// ErrNoLab: the directory holds no lab state.
var ErrNoLab = errors.New("no lab there")

// loadState reads dir/state.json.
func loadState(dir string) (*State, error) {
	data, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (run calyx-lab up first)", dir, ErrNoLab)
	}
	if err != nil {
		return nil, fmt.Errorf("reading lab state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab state %s is damaged: %w (calyx-lab down still cleans up by name prefix)", statePath(dir), err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("lab state %s has version %d, this calyx-lab knows %d", statePath(dir), s.Version, stateVersion)
	}
	return &s, nil
}

// saveState writes the state atomically (temp file, fsync, rename).
func saveState(dir string, s *State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding lab state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("saving lab state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("saving lab state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("saving lab state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving lab state: %w", err)
	}
	if err := os.Rename(tmp.Name(), statePath(dir)); err != nil {
		return fmt.Errorf("saving lab state: %w", err)
	}
	return nil
}

// dirLock is an flock on dir/lock: CLI invocations that change a lab (up,
// add, del, down) run one at a time. The kernel drops it when the holder
// dies, so a crashed calyx-lab never blocks the next one.
type dirLock struct{ f *os.File }

func lockDir(ctx context.Context, dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab directory: %w", err)
	}
	f, err := os.OpenFile(lockPath(dir), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &dirLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lab lock %s: %w", lockPath(dir), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lab %s is busy (another calyx-lab holds %s): %w", dir, lockPath(dir), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *dirLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// removeLabFiles removes what Down removes: everything but logs/.
func removeLabFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading lab directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == "logs" || e.Name() == "lock" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
