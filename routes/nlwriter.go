package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes/netns"
)

// routeWriter sends route requests to the kernel many at a time over one
// NETLINK_ROUTE socket of its own. rtnetlink handles the messages of one
// sendmsg in order, synchronously, and (without NLM_F_ACK) answers only
// the ones that fail; asking an ack for the last one of a batch marks
// where the answers end. A batch of routes thus costs two system calls,
// where a request-and-wait per route costs two per route.
type routeWriter struct {
	fd   int
	port uint32 // the socket's netlink port: the kernel's events about our writes carry it
	seq  uint32
	base uint32 // sequence number of the batch's first request
	n    int    // requests queued
	buf  []byte
	rbuf []byte
}

const (
	// writeBatchMax bounds one sendmsg: well inside the socket's send
	// buffer, and the kernel answers every failure of a batch into the
	// receive buffer before we read.
	writeBatchMax = 256
	// ackTimeout guards the wait for the kernel's answers, which have been
	// queued by the time sendmsg returns: it only fires on a broken socket.
	ackTimeout   = 10 * time.Second
	writerRcvBuf = 1 << 20
)

// newRouteWriter makes the socket inside the namespace (a netlink socket
// belongs to the namespace it was created in).
func newRouteWriter(nsPath string) (*routeWriter, error) {
	var fd int
	err := netns.Do(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("route socket: %w", err)
	}
	w := &routeWriter{fd: fd, seq: uint32(time.Now().UnixNano())}
	setup := func() error {
		// Failure answers carry only the request's header, not the whole
		// request back.
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, writerRcvBuf); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(ackTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		nl, ok := sa.(*unix.SockaddrNetlink)
		if !ok {
			return errors.New("not a netlink address")
		}
		w.port = nl.Pid
		return nil
	}
	if err := setup(); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("route socket: %w", err)
	}
	return w, nil
}

func (w *routeWriter) close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}

// queue adds one request to the batch; full reports that it should be
// flushed before the next one.
func (w *routeWriter) queue(op WriteOp, dst netip.Prefix, k kroute, table, protocol int) (full bool) {
	if w.n == 0 {
		w.base = w.seq
		w.buf = w.buf[:0]
	}
	w.buf = appendRouteMsg(w.buf, op, w.base+uint32(w.n), dst, k, table, protocol)
	w.n++
	return w.n >= writeBatchMax
}

// flush sends the batch and returns each request's outcome, in queue
// order: nil, or the kernel's error (a unix.Errno). A failure of the
// socket itself fails every request whose outcome is unknown with that
// error; answers that arrive later are told apart by their sequence
// numbers and dropped.
func (w *routeWriter) flush() []error {
	n := w.n
	if n == 0 {
		return nil
	}
	w.n = 0
	w.seq = w.base + uint32(n)
	results := make([]error, n)
	fail := func(err error) []error {
		for i := range results {
			if results[i] == nil {
				results[i] = err
			}
		}
		return results
	}
	// The last request asks for an ack, whatever its outcome.
	last := w.buf
	for i := 1; i < n; i++ {
		last = last[ne.Uint32(last):]
	}
	ne.PutUint16(last[6:], ne.Uint16(last[6:])|unix.NLM_F_ACK)
	lastSeq := w.base + uint32(n) - 1
	if _, err := unix.Write(w.fd, w.buf); err != nil { // to the kernel: the socket's default peer
		return fail(fmt.Errorf("sending route requests: %w", err))
	}
	if len(w.rbuf) == 0 {
		w.rbuf = make([]byte, 64<<10)
	}
	for {
		m, err := unix.Read(w.fd, w.rbuf)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fail(fmt.Errorf("reading the kernel's answers to route requests: %w", err))
		}
		done := false
		b := w.rbuf[:m]
		for len(b) >= nlmsgHdrLen {
			l := int(ne.Uint32(b))
			if l < nlmsgHdrLen || l > len(b) {
				break
			}
			typ, seq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
			if typ == unix.NLMSG_ERROR && l >= nlmsgHdrLen+4 {
				if i := seq - w.base; i < uint32(n) {
					if errno := int32(ne.Uint32(b[nlmsgHdrLen:])); errno != 0 {
						results[i] = unix.Errno(-errno)
					}
				}
				done = done || seq == lastSeq
			}
			b = b[min(nlAlign(l), len(b)):]
		}
		if done {
			return results
		}
	}
}
