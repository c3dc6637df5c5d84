package routes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
)

// routeEvents reads the namespace's route events from a socket of its own
// and hands the table only those of its protocol, table and families. Each
// message's header is checked before anything else is decoded: the other
// listeners' routes, and the kernel's, cost next to nothing, and ours are
// decoded straight into the table's shape.
type routeEvents struct {
	f       *os.File
	done    chan struct{}
	stopped atomic.Bool
}

// watchRouteEvents subscribes and starts reading; sink.routeEvent is
// called for each event of sel (deleted: RTM_DELROUTE), then
// sink.eventsQueued once per datagram that held any. When reading fails
// (ENOBUFS: the kernel dropped events), the error is sent on failed and
// reading stops: the caller renews the subscription with a full re-read.
func (k *netlinkKernel) watchRouteEvents(sel eventSelector, sink eventSink, failed chan<- error) (*routeEvents, error) {
	var fd int
	err := netns.Do(k.nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("route event socket: %w", err)
	}
	var groups uint32
	if sel.family.has4() {
		groups |= unix.RTMGRP_IPV4_ROUTE
	}
	if sel.family.has6() {
		groups |= unix.RTMGRP_IPV6_ROUTE
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, subscribeBuffer); err != nil {
		// Without CAP_NET_ADMIN: as much as the sysctl limit allows.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, subscribeBuffer)
	}
	if err := attachEventFilter(fd, sel.protocol, k.w.port); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("route event socket: filter: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("route event socket: %w", err)
	}
	ev := &routeEvents{f: os.NewFile(uintptr(fd), "route-events"), done: make(chan struct{})}
	rc, err := ev.f.SyscallConn()
	if err != nil {
		ev.f.Close()
		return nil, fmt.Errorf("route event socket: %w", err)
	}
	go func() {
		defer close(ev.done)
		buf := make([]byte, 256<<10)
		for {
			var n int
			var rerr error
			err := rc.Read(func(fd uintptr) bool {
				n, rerr = unix.Read(int(fd), buf)
				return !errors.Is(rerr, unix.EAGAIN)
			})
			if err == nil {
				err = rerr
			}
			if err != nil {
				if !ev.stopped.Load() {
					select {
					case failed <- fmt.Errorf("reading route events: %w", err):
					default: // the subscription is already reported lost
					}
				}
				return
			}
			if decodeRouteEvents(buf[:n], sel, sink) {
				sink.eventsQueued()
			}
		}
	}()
	return ev, nil
}

// attachEventFilter makes the kernel drop, before they are queued to the
// socket, the events of other protocols and the echoes of our own writes
// (an event carries the port of the socket whose request caused it, and
// the writer already knows from the answer what it wrote). A 100k-route
// transfer then wakes the reader for none of its 100k echoes.
func attachEventFilter(fd, protocol int, writerPort uint32) error {
	const (
		ldB   = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
		ldW   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
		pidAt = 12              // nlmsghdr.nlmsg_pid
		proAt = nlmsgHdrLen + 5 // rtmsg.rtm_protocol
	)
	// A word load reads in network order; nlmsg_pid is in host order.
	var pid [4]byte
	ne.PutUint32(pid[:], writerPort)
	prog := []unix.SockFilter{
		{Code: ldB, K: proAt},
		{Code: jeq, K: uint32(protocol), Jt: 0, Jf: 3}, // another protocol: drop
		{Code: ldW, K: pidAt},
		{Code: jeq, K: binary.BigEndian.Uint32(pid[:]), Jt: 1, Jf: 0}, // our own write: drop
		{Code: ret, K: 0xffffffff},
		{Code: ret, K: 0},
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}

// stop closes the socket and waits for the reader to end.
func (ev *routeEvents) stop() {
	ev.stopped.Store(true)
	ev.f.Close()
	<-ev.done
}

// decodeRouteEvents hands the events of sel in one datagram to sink, and
// reports whether there were any. Each message's header is checked before
// the rest is decoded.
func decodeRouteEvents(b []byte, sel eventSelector, sink eventSink) bool {
	any := false
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b))
		if l < nlmsgHdrLen || l > len(b) {
			break
		}
		typ := ne.Uint16(b[4:])
		body := b[nlmsgHdrLen:l]
		b = b[min(nlAlign(l), len(b)):]
		if typ != unix.RTM_NEWROUTE && typ != unix.RTM_DELROUTE {
			continue
		}
		h, ok := parseRouteHeader(body)
		if !ok || !sel.wants(h.family, h.table, h.protocol) {
			continue
		}
		p, k, ok := parseRouteMsg(body)
		if !ok {
			continue
		}
		sink.routeEvent(p, k, typ == unix.RTM_DELROUTE)
		any = true
	}
	return any
}
