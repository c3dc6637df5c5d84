package scalebench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/e2e/lab"
)

// blockCost is one agent's memory for other nodes' IPAM blocks: every
// agent follows every block (its own give it blackholes and aggregates,
// others' the addresses it borrowed), so at 5,000 nodes it holds ~10k
// blocks with ~500k allocations.
type blockCost struct {
	blocks, perBlock int
	base, with       agentMem
	fill             time.Duration
}

// perAllocation is the RSS growth per remote allocation.
func (c blockCost) perAllocation() float64 {
	return (c.with.rss - c.base.rss) / float64(c.blocks*c.perBlock)
}

// heapPerAllocation is the Go heap's growth per remote allocation.
func (c blockCost) heapPerAllocation() float64 {
	return (c.with.heapInuse - c.base.heapInuse) / float64(c.blocks*c.perBlock)
}

// measureBlocks removes the fake endpoints (so that the two readings are
// not ~150 MiB apart, where restart noise alone is MiBs), reads host1's
// agent's memory after a restart, then writes blocks /26 blocks of fake
// nodes with perBlock allocations each (and their handle records, as the
// IPAM writes them) and reads it again after another restart.
func measureBlocks(ctx context.Context, l *lab.Lab, sz sizes, log *slog.Logger) (c blockCost, err error) {
	return measureBlocksAs(ctx, l, sz, ipam.EncodeBlock, log)
}

// measureBlocksAs is measureBlocks storing each block with encode.
func measureBlocksAs(ctx context.Context, l *lab.Lab, sz sizes, encode func(*ipam.Block) ([]byte, error), log *slog.Logger) (c blockCost, err error) {
	c.blocks, c.perBlock = sz.remoteBlocks, sz.allocsPerBlock
	ds, err := l.Datastore()
	if err != nil {
		return c, err
	}
	if _, err := ds.Etcd().Delete(ctx, datastore.KindPrefix(datastore.KindWorkloadEndpoint)+"scale-node-", clientv3.WithPrefix()); err != nil {
		return c, fmt.Errorf("removing the fake endpoints: %w", err)
	}
	if c.base, _, err = restartAndRead(ctx, l, sz.settle); err != nil {
		return c, err
	}
	if err := l.StopAgent("host1"); err != nil {
		return c, err
	}
	if c.fill, err = fillBlocks(ctx, l, c.blocks, c.perBlock, encode); err != nil {
		return c, err
	}
	log.Info("remote blocks written", "blocks", c.blocks, "allocations", c.blocks*c.perBlock, "took", c.fill.Round(time.Millisecond))
	if err := l.StartAgent(ctx, "host1"); err != nil {
		return c, err
	}
	if c.with, err = settleAndRead(ctx, l, sz.settle); err != nil {
		return c, err
	}
	log.Info("agent with remote blocks", "rss_mib", c.with.rss/(1<<20), "per_allocation", c.perAllocation(), "heap_per_allocation", c.heapPerAllocation())
	return c, nil
}

// fillBlocks writes the blocks of the remote pool's first n /26s, block k
// claimed by fake node k with per addresses taken, and a handle per
// address, many per transaction; encode writes the block's value.
func fillBlocks(ctx context.Context, l *lab.Lab, n, per int, encode func(*ipam.Block) ([]byte, error)) (time.Duration, error) {
	ds, err := l.Datastore()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	pool := netip.MustParsePrefix(remotePool)
	now := time.Now().UTC()
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := ds.Etcd().Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for k := range n {
		node := fmt.Sprintf("scale-node-%04d", k)
		cidr := netip.PrefixFrom(addrPlus(pool.Addr(), uint32(k*64)), 26)
		b := &ipam.Block{Prefix: cidr, Pool: "scale-remote", Affinity: node, Updated: now, Cursor: per % 64}
		for j := range per {
			sum := sha256.Sum256([]byte(node + "/" + strconv.Itoa(j)))
			id := ipam.AttachmentHandle(node, hex.EncodeToString(sum[:]), "eth0")
			ip := addrPlus(cidr.Addr(), uint32(j))
			attrs := ipam.Attributes{Namespace: fakeNamespace(j % fakeNamespaces), Pod: fmt.Sprintf("pod-%d-%d", k, j),
				Endpoint: datastore.WorkloadEndpointName(node, hex.EncodeToString(sum[:]), "eth0")}
			b.Allocations = append(b.Allocations, ipam.Allocation{IP: ip, Node: node, Handle: id, Attributes: attrs, Time: now})
			h := ipam.Handle{ID: id, Node: node, Created: now, Addresses: []ipam.HandleAddress{{IP: ip, Block: cidr}}, Attributes: attrs}
			hv, err := json.Marshal(&h)
			if err != nil {
				return 0, err
			}
			ops = append(ops, clientv3.OpPut(ipam.HandleKey(id), string(hv)))
		}
		bv, err := encode(b)
		if err != nil {
			return 0, fmt.Errorf("block %s: %w", cidr, err)
		}
		ops = append(ops, clientv3.OpPut(ipam.BlockKey(cidr), string(bv)))
		if len(ops) >= 100 {
			if err := flush(); err != nil {
				return 0, fmt.Errorf("writing remote blocks: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return 0, fmt.Errorf("writing remote blocks: %w", err)
	}
	return time.Since(start), nil
}

func addrPlus(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
