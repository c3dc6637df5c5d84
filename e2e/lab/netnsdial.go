package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// A socket belongs to the network namespace of the thread that created it,
// for its whole life. So the lab, which runs in the root namespace, reaches
// etcd and the workloads by creating sockets on a thread that has entered a
// lab namespace. (A private copy of the idea in routes/netns, to keep the
// lab independent of the dataplane packages.)

func netnsPath(name string) string { return "/run/netns/" + name }

// inNamespace runs fn inside the namespace, on a fresh goroutine locked to
// its OS thread, and waits for it. The caller's thread never moves; if the
// way back fails the locked thread is thrown away with its goroutine.
func inNamespace(name string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- enterAndRun(name, fn) }()
	return <-done
}

func enterAndRun(name string, fn func() error) (err error) {
	target, err := os.Open(netnsPath(name))
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", name, err)
	}
	defer func() {
		if backErr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); backErr != nil {
			// Stay locked: the runtime discards the thread when this
			// goroutine ends.
			err = errors.Join(err, fmt.Errorf("leaving network namespace %s: %w", name, backErr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// dialerIn returns a dial function whose TCP connections start inside the
// namespace. addr may carry a scheme ("http://198.18.0.250:2379"), as the
// etcd client hands it over.
func dialerIn(netns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if _, rest, ok := strings.Cut(addr, "://"); ok {
			addr = rest
		}
		var c net.Conn
		err := inNamespace(netns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// listenIn opens a TCP listener inside the namespace.
func listenIn(netns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNamespace(netns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

func writeFile(path, val string) error {
	return os.WriteFile(path, []byte(val), 0o644)
}
