package routes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/internal/heartbeat"
	"github.com/calyx-net/calyx/routes/netns"
	"github.com/calyx-net/calyx/routes/sysctl"
)

// WorkloadIfacePrefix starts the name of every host-side workload interface
// the agent owns.
const WorkloadIfacePrefix = "cx"

// SysctlOptions configures a Sysctls reasserter.
type SysctlOptions struct {
	// NetNSPath is the namespace to work in; empty means the agent's own.
	NetNSPath string
	// InterfacePrefix selects the interfaces to manage; default "cx".
	InterfacePrefix string
	// IPv6 also asserts the IPv6 settings (all.forwarding, proxy_ndp and
	// forwarding per interface). Off by default: IPv6 forwarding makes the
	// host ignore router advertisements.
	IPv6 bool
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
	// ResyncInterval is how often every setting is checked again, to undo
	// changes made by hand (they send no event). Default 10s.
	ResyncInterval time.Duration
}

// Sysctls keeps the forwarding sysctls of the namespace and the proxy-ARP
// settings of every workload interface (name starting with the prefix) at
// their desired values. It never touches other interfaces.
type Sysctls struct {
	opts    SysctlOptions
	log     *slog.Logger
	changed atomic.Uint64
	errors  atomic.Uint64
}

// NewSysctls returns a reasserter; nothing is written before Apply or Run.
func NewSysctls(opts SysctlOptions) *Sysctls {
	if opts.InterfacePrefix == "" {
		opts.InterfacePrefix = WorkloadIfacePrefix
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sysctls{opts: opts, log: log.With("component", "sysctls")}
}

// SysctlStats are counters for metrics.
type SysctlStats struct {
	Changed uint64 // settings found wrong and rewritten
	Errors  uint64 // failed checks or writes
}

// Stats returns the counters.
func (s *Sysctls) Stats() SysctlStats {
	return SysctlStats{Changed: s.changed.Load(), Errors: s.errors.Load()}
}

// Apply checks the global settings and those of every managed interface and
// rewrites what differs.
func (s *Sysctls) Apply(ctx context.Context) error {
	var changed int
	err := netns.Do(s.opts.NetNSPath, func() error {
		if s.opts.IPv6 && !sysctl.IPv6Available() {
			return errors.New("IPv6 settings requested but the namespace has no IPv6")
		}
		n, err := sysctl.Ensure(sysctl.Global(s.opts.IPv6))
		changed += n
		errs := []error{err}
		names, lerr := s.managedInterfaces()
		errs = append(errs, lerr)
		for _, name := range names {
			if ctx.Err() != nil {
				errs = append(errs, ctx.Err())
				break
			}
			n, err := s.ensureInterface(name)
			changed += n
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	s.record(changed, err)
	return err
}

// ApplyInterface checks and fixes the settings of one interface. It does
// nothing for a name outside the managed prefix.
func (s *Sysctls) ApplyInterface(name string) error {
	if !strings.HasPrefix(name, s.opts.InterfacePrefix) {
		return nil
	}
	var changed int
	err := netns.Do(s.opts.NetNSPath, func() error {
		var err error
		changed, err = s.ensureInterface(name)
		return err
	})
	s.record(changed, err)
	return err
}

func (s *Sysctls) record(changed int, err error) {
	if changed > 0 {
		s.changed.Add(uint64(changed))
		s.log.Info("sysctls reasserted", "changed", changed)
	}
	if err != nil {
		s.errors.Add(1)
		s.log.Warn("sysctls", "err", err)
	}
}

// ensureInterface runs inside the namespace. An interface that vanished
// meanwhile is not an error.
func (s *Sysctls) ensureInterface(name string) (int, error) {
	n, err := sysctl.Ensure(sysctl.HostInterface(name, s.opts.IPv6))
	// A workload deleted while we write: its /proc/sys entries vanish one
	// by one, so "no such file" means it is going, not that we failed.
	if err != nil && (!interfaceExists(name) || errors.Is(err, fs.ErrNotExist)) {
		s.log.Debug("interface went away while its sysctls were checked", "ifname", name, "err", err)
		return n, nil
	}
	return n, err
}

// managedInterfaces lists the namespace's interfaces with the prefix, as
// /proc/sys sees them (inside the namespace).
func (s *Sysctls) managedInterfaces() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(sysctl.Root, "net/ipv4/conf"))
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), s.opts.InterfacePrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func interfaceExists(name string) bool {
	_, err := os.Stat(filepath.Join(sysctl.Root, "net/ipv4/conf", name))
	return err == nil
}

// Run applies at once, then again for every new or renamed managed
// interface and every ResyncInterval, until ctx ends.
func (s *Sysctls) Run(ctx context.Context) error {
	ns, err := netns.Open(s.opts.NetNSPath)
	if err != nil {
		return err
	}
	defer ns.Close()

	tick := time.NewTicker(s.opts.ResyncInterval)
	defer tick.Stop()
	for ctx.Err() == nil {
		done := make(chan struct{})
		ch := make(chan netlink.LinkUpdate, 256)
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			Namespace:     &ns,
			ErrorCallback: func(err error) { s.log.Debug("link event socket", "err", err) },
		})
		// Apply after subscribing: nothing that happens from here is missed.
		_ = s.Apply(ctx)
		heartbeat.Beat(ctx) // and at each resync tick: the owner's stall detection
		if err != nil {
			close(done)
			s.log.Warn("subscribe to link events, retrying", "err", err)
		} else {
			s.follow(ctx, ch, tick.C)
			close(done)
			go drainUntilClosed(ch)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// follow handles link events until ctx ends or the subscription closes.
func (s *Sysctls) follow(ctx context.Context, ch <-chan netlink.LinkUpdate, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			if u.Header.Type == unix.RTM_NEWLINK {
				_ = s.ApplyInterface(u.Attrs().Name)
			}
		case <-tick:
			_ = s.Apply(ctx)
			heartbeat.Beat(ctx)
		}
	}
}

func drainUntilClosed[T any](ch <-chan T) {
	for range ch {
	}
}
