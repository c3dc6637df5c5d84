package routes

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// kernelShim is everything a Table reads from, writes to and hears from the
// kernel, in the table's own shapes (kroute, linkState). netlinkKernel is
// the real one; the unit tests run the table's merge, conflict and pending
// logic against an in-memory kernel with injected failures, without root
// (as Felix's routetable does with its netlink shim).
//
// Only the apply goroutine calls the list, lookup and write methods
// (applyMu held); subscribe is called by Run.
type kernelShim interface {
	// listRoutes calls fn for every route of the protocol in the table,
	// for one family (unix.AF_INET or AF_INET6). It may fail with an
	// error wrapping netlink.ErrDumpInterrupted: the caller starts over.
	listRoutes(family, table, protocol int, fn func(netip.Prefix, kroute)) error
	// listLinks lists the interfaces by name.
	listLinks() (map[string]linkState, error)
	// linkByName looks one interface up; an error when it does not exist.
	linkByName(name string) (linkState, error)
	// queueWrite adds one write to the batch; full says to flush before
	// the next one. A delete's k is the route as the kernel reported it.
	queueWrite(op WriteOp, dst netip.Prefix, k kroute, table, protocol int) (full bool)
	// flushWrites sends the batch and returns each write's outcome in
	// queue order: nil or the kernel's error (a unix.Errno).
	flushWrites() []error
	// subscribe starts delivering the route events of sel (other than the
	// echoes of our own writes) and every link event to sink, until stop.
	// When the subscription is lost (events dropped) the error goes to
	// failed, once; the caller renews it with a full re-read.
	subscribe(sel eventSelector, sink eventSink, failed chan<- error) (stop func(), err error)
	// close releases the shim's sockets.
	close()
}

// eventSelector names the routes whose events a table wants.
type eventSelector struct {
	protocol, table int
	family          Family
}

func (s eventSelector) wants(family, table, protocol int) bool {
	if table != s.table || protocol != s.protocol {
		return false
	}
	switch family {
	case unix.AF_INET:
		return s.family.has4()
	case unix.AF_INET6:
		return s.family.has6()
	}
	return false
}

// eventSink receives kernel events. The Table is the one sink.
type eventSink interface {
	// routeEvent is one route of the selector added, changed or deleted
	// by someone else.
	routeEvent(dst netip.Prefix, k kroute, deleted bool)
	// linkEvent is an interface that appeared, changed or went away.
	linkEvent(index int, name string, up, deleted bool)
	// eventsQueued ends a run of events: time for a pass.
	eventsQueued()
}

// The Table as the sink of its subscription.

func (t *Table) routeEvent(p netip.Prefix, k kroute, deleted bool) {
	t.mu.Lock()
	if prev, ok := t.kernelEvents[p]; ok && prev.k.priority != k.priority {
		// Two routes of ours at p (another metric, made by hand): the
		// queue keeps one event per destination, so re-read instead.
		t.needResync = true
	}
	t.kernelEvents[p] = kernelEvent{k: k, deleted: deleted}
	t.mu.Unlock()
}

func (t *Table) linkEvent(index int, name string, up, deleted bool) {
	t.mu.Lock()
	t.linkEvents[index] = linkEvent{name: name, up: up, deleted: deleted}
	t.mu.Unlock()
}

func (t *Table) eventsQueued() { t.poke() }
