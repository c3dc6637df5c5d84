package ipam

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
)

// IPAM allocates and releases workload addresses. One value may serve many
// nodes and many goroutines; it keeps a cache of the blocks it used (with
// their mod revisions) so the common allocation is one etcd transaction.
type IPAM struct {
	client *datastore.Client
	etcd   *clientv3.Client
	log    *slog.Logger
	now    func() time.Time

	// conflicts counts transactions that lost a race (for tests and the
	// benchmark's notes).
	conflicts atomic.Int64

	mu      sync.Mutex
	queue   []*op
	running bool // a runner goroutine is draining the queue
	// inUse is the agent's view of inUseNode's workloads (SetInUse).
	inUseNode string
	inUse     InUseFunc

	// Owned by the runner goroutine (one at a time).
	snap    *snapshot
	blocks  map[netip.Prefix]*cachedBlock
	handles map[string]*cachedHandle
}

type cachedBlock struct {
	b   *Block // never changed once cached; plans clone it
	rev int64
}

type cachedHandle struct {
	h   *Handle
	rev int64
}

// New returns an IPAM working on the client's etcd.
func New(client *datastore.Client, log *slog.Logger) *IPAM {
	return &IPAM{
		client:  client,
		etcd:    client.Etcd(),
		log:     log,
		now:     time.Now,
		blocks:  map[netip.Prefix]*cachedBlock{},
		handles: map[string]*cachedHandle{},
	}
}

// maxRequestIPs keeps one request within a transaction's operation limit.
const maxRequestIPs = 16

// Request asks for the addresses of one workload attachment.
type Request struct {
	// Handle names the attachment: AttachmentHandle(node, containerID, ifName). Asking
	// again with the same handle returns the same addresses.
	Handle string
	// Node is the node the workload runs on; blocks are claimed for it.
	Node  string
	Attrs Attributes
	// Families limits the families allocated; nil means one address of
	// every family for which a pool selects the node.
	Families []Family
	// IPs asks for these exact addresses instead.
	IPs []netip.Addr
}

func (r *Request) validate() error {
	if err := validHandle(r.Handle); err != nil {
		return err
	}
	if r.Node == "" || strings.ContainsAny(r.Node, "/\x00") {
		return fmt.Errorf("handle %q: %q is not a node name", r.Handle, r.Node)
	}
	for _, f := range r.Families {
		if f != V4 && f != V6 {
			return fmt.Errorf("handle %q: family %d is neither 4 nor 6", r.Handle, int(f))
		}
	}
	if len(r.IPs) > maxRequestIPs {
		return fmt.Errorf("handle %q: %d addresses asked for, at most %d", r.Handle, len(r.IPs), maxRequestIPs)
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range r.IPs {
		if !ip.IsValid() || ip.Zone() != "" {
			return fmt.Errorf("handle %q: %v is not a plain IP address", r.Handle, ip)
		}
		if seen[ip.Unmap()] {
			return fmt.Errorf("handle %q: %s is asked for twice", r.Handle, ip)
		}
		seen[ip.Unmap()] = true
	}
	return nil
}

// Allocate gives the handle one address per family (or the addresses in
// req.IPs) and returns them as /32 and /128, IPv4 first. If the handle
// already holds addresses they are returned unchanged.
func (i *IPAM) Allocate(ctx context.Context, req Request) ([]netip.Prefix, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	ips := make([]netip.Addr, len(req.IPs)) // the caller's slice stays as it was
	for k, ip := range req.IPs {
		ips[k] = ip.Unmap()
	}
	req.IPs = ips
	o := &op{kind: opAllocate, ctx: ctx, req: req, handle: req.Handle, done: make(chan struct{})}
	return i.await(ctx, o)
}

// Release frees every address of the handle. Releasing a handle that holds
// nothing (or was released already) succeeds.
func (i *IPAM) Release(ctx context.Context, handle string) error {
	if err := validHandle(handle); err != nil {
		return err
	}
	o := &op{kind: opRelease, ctx: ctx, handle: handle, done: make(chan struct{})}
	_, err := i.await(ctx, o)
	return err
}

// ReleaseAttachment releases what one attachment on node holds: its
// handle, or, for a workload added before handles were node-scoped, the
// legacy handle, but only when that record says it is node's (a legacy
// handle is shared by every node's container with that ID).
func (i *IPAM) ReleaseAttachment(ctx context.Context, node, containerID, ifName string) error {
	id := AttachmentHandle(node, containerID, ifName)
	if err := i.Release(ctx, id); err != nil {
		return err
	}
	legacy := HandleID(containerID, ifName)
	resp, err := i.etcd.Get(ctx, HandleKey(legacy))
	if err != nil {
		return fmt.Errorf("reading handle %q: %w", legacy, err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	h, err := decodeHandle(resp.Kvs[0].Value)
	if err != nil || h.Node != node {
		return nil // not ours, or unreadable: gc and the operator decide
	}
	return i.Release(ctx, legacy)
}

// await queues the op and waits for its outcome or for ctx. A caller that
// gives up may still have its allocation committed: garbage collection
// releases it, since no endpoint will ever name it.
func (i *IPAM) await(ctx context.Context, o *op) ([]netip.Prefix, error) {
	i.submit(o)
	select {
	case <-o.done:
		return o.result, o.err
	case <-ctx.Done():
		select {
		case <-o.done:
			return o.result, o.err
		default:
			return nil, fmt.Errorf("IPAM %s of handle %q: %w", o.kind, o.handle, ctx.Err())
		}
	}
}

// LostRaces counts the transactions this IPAM retried because another
// writer changed a block, handle or the configuration first.
func (i *IPAM) LostRaces() int64 { return i.conflicts.Load() }
