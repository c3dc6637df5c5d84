// Package netns runs code inside a network namespace given by its path
// (for example /run/netns/NAME or /proc/PID/ns/net). An empty path always
// means the namespace the process already runs in, which is what the agent
// uses in production; tests pass the paths of namespaces they created.
package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotExist is returned (wrapped) when a namespace path does not exist.
var ErrNotExist = errors.New("network namespace does not exist")

// Exists reports whether path names an existing namespace file. The empty
// path (the current namespace) always exists.
func Exists(path string) bool {
	if path == "" {
		return true
	}
	_, err := os.Stat(path)
	return err == nil
}

// Open returns a handle on the namespace at path, or on the calling
// thread's namespace when path is empty. The caller closes it.
func Open(path string) (vns.NsHandle, error) {
	if path == "" {
		h, err := vns.Get()
		if err != nil {
			return vns.None(), fmt.Errorf("open current network namespace: %w", err)
		}
		return h, nil
	}
	h, err := vns.GetFromPath(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return vns.None(), fmt.Errorf("network namespace %q: %w", path, ErrNotExist)
		}
		return vns.None(), fmt.Errorf("open network namespace %q: %w", path, err)
	}
	return h, nil
}

// Do runs fn on a locked OS thread that has entered the namespace at path,
// then moves the thread back. With an empty path fn runs directly.
//
// Only fn's own goroutine is inside the namespace: goroutines it starts run
// on other threads, in the original namespace. Files under /proc/sys/net
// resolve to the namespace of the thread that opens them, so sysctl access
// for another namespace must happen inside fn.
func Do(path string, fn func() error) (err error) {
	if path == "" {
		return fn()
	}
	target, err := Open(path)
	if err != nil {
		return err
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := vns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current network namespace: %w", err)
	}
	defer orig.Close()
	if err := vns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %q: %w", path, err)
	}
	defer func() {
		if backErr := vns.Set(orig); backErr != nil {
			// Leave the thread locked: the runtime discards a locked
			// thread when its goroutine exits, so no other goroutine
			// ever runs in the wrong namespace.
			err = errors.Join(err, fmt.Errorf("return from network namespace %q: %w", path, backErr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// NewHandle returns a netlink route handle whose socket lives in the
// namespace at path (the current namespace when path is empty). One handle
// is meant to be reused for many requests; the caller closes it.
func NewHandle(path string) (*netlink.Handle, error) {
	if path == "" {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("open netlink handle: %w", err)
		}
		return h, nil
	}
	ns, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle in %q: %w", path, err)
	}
	return h, nil
}

// DoHandle opens a netlink handle in the namespace at path, runs fn with it
// and closes it. Unlike Do it does not move any thread.
func DoHandle(path string, fn func(h *netlink.Handle) error) error {
	h, err := NewHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	return fn(h)
}
