package lab

import (
	"context"
	"net"
	"os"
	"strings"

	"github.com/calyx-net/calyx/routes/netns"
)

// A socket belongs to the network namespace of the thread that created it,
// for its whole life. So the lab, which runs in the root namespace, reaches
// etcd and the workloads by creating sockets inside a lab namespace with
// routes/netns.Do (a thread of its own; the caller's never moves).

func netnsPath(name string) string { return "/run/netns/" + name }

// inNamespace runs fn inside the lab namespace called name.
func inNamespace(name string, fn func() error) error {
	return netns.Do(netnsPath(name), fn)
}

// socketIn opens a socket (or anything holding one) inside the namespace:
// a socket keeps the namespace it was created in.
func socketIn[T any](netns string, open func() (T, error)) (T, error) {
	var sock T
	err := inNamespace(netns, func() error {
		var err error
		sock, err = open()
		return err
	})
	return sock, err
}

// DiscardConns accepts connections on ln and closes each at once, until ln
// is closed: a TCP server for probes that only need the handshake.
func DiscardConns(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// dialerIn returns a dial function whose TCP connections start inside the
// namespace. addr may carry a scheme ("http://198.18.0.250:2379"), as the
// etcd client hands it over.
func dialerIn(netns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if _, rest, ok := strings.Cut(addr, "://"); ok {
			addr = rest
		}
		return socketIn(netns, func() (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) })
	}
}

// listenIn opens a TCP listener inside the namespace.
func listenIn(netns, addr string) (net.Listener, error) {
	return socketIn(netns, func() (net.Listener, error) { return net.Listen("tcp", addr) })
}

func writeFile(path, val string) error {
	return os.WriteFile(path, []byte(val), 0o644)
}
