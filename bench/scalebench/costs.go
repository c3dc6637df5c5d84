package scalebench

import (
	"context"
	"log/slog"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// costs are the figures of the two-host lab; a zero part was not measured.
type costs struct {
	etcd   etcdLoad
	remote remoteCost
	blocks blockCost
}

// measureCosts brings up two hosts (host2's agent is the other node that
// sees host1's changes) and measures the etcd load of CNI ADD/DEL, then
// host1's agent with many remote endpoints, then with many remote IPAM
// blocks besides.
func measureCosts(ctx context.Context, sz sizes, opts lab.Options, log *slog.Logger) (c costs, err error) {
	opts.Hosts = 2
	err = withLab(ctx, opts, log, func(l *lab.Lab, _ time.Duration) error {
		if c.etcd, err = measureEtcdLoad(ctx, l, sz.adds, log.With("part", "etcd")); err != nil {
			return err
		}
		if c.remote, err = measureRemote(ctx, l, sz, sz.settle, log.With("part", "remote")); err != nil {
			return err
		}
		c.blocks, err = measureBlocks(ctx, l, sz, log.With("part", "blocks"))
		return err
	})
	return c, err
}
