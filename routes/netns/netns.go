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

// Do runs fn on a fresh goroutine locked to its own OS thread that has
// entered the namespace at path, and waits for it; with an empty path fn
// runs directly. The caller's thread never moves, so a caller (a gRPC
// handler in CNI ADD) can never be left in a workload's namespace, and
// calls may run at the same time, each on a thread of its own (as
// containernetworking's ns.Do).
//
// If the thread cannot return to its original namespace, or fn panics, the
// thread stays locked: the runtime ends a locked thread with its goroutine
// (or, for the main thread, which cannot end, parks it for good), so no
// other goroutine ever runs on it. A panic in fn is raised again in the
// caller's goroutine.
//
// Only fn's own goroutine is inside the namespace: goroutines it starts run
// on other threads, in the original namespace. Files under /proc/sys/net
// resolve to the namespace of the thread that opens them, so sysctl access
// for another namespace must happen inside fn. Sockets and child processes
// made inside fn stay in the namespace after it returns.
func Do(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := Open(path)
	if err != nil {
		return err
	}
	defer target.Close()

	done := make(chan outcome, 1)
	go func() { done <- runIn(target, path, fn) }()
	o := <-done
	if o.panicked {
		panic(o.value)
	}
	return o.err
}

// outcome is how fn ended on its thread.
type outcome struct {
	err      error
	panicked bool
	value    any // what fn panicked with
}

// setns switches the calling thread's network namespace; tests replace it
// to make the way back fail.
var setns = vns.Set

// runIn locks the calling goroutine's thread, enters target, runs fn and
// switches back. It unlocks the thread only when the way back succeeded.
func runIn(target vns.NsHandle, path string, fn func() error) (o outcome) {
	runtime.LockOSThread()
	orig, err := vns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		o.err = fmt.Errorf("open current network namespace: %w", err)
		return o
	}
	defer orig.Close()
	if err := setns(target); err != nil {
		// A failed setns leaves the thread where it was.
		runtime.UnlockOSThread()
		o.err = fmt.Errorf("enter network namespace %q: %w", path, err)
		return o
	}
	defer func() {
		if r := recover(); r != nil {
			// fn may have left the thread in any state: never reuse it.
			o.panicked, o.value = true, r
			return
		}
		if backErr := setns(orig); backErr != nil {
			o.err = errors.Join(o.err, fmt.Errorf("return from network namespace %q: %w", path, backErr))
			return
		}
		runtime.UnlockOSThread()
	}()
	o.err = fn()
	return o
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
