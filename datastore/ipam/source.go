package ipam

import (
	"fmt"

	"github.com/calyx-net/calyx/datastore"
)

// BlockSource lets the agent's syncer follow IPAM blocks: each value is a
// *Block. From them the agent takes the blocks whose Affinity is its node
// (blackhole route, BGP aggregate) and, with Block.BorrowedBy, the
// addresses it borrowed from other nodes' blocks (BGP /32 or /128).
func BlockSource() datastore.Source {
	return datastore.Source{Prefix: BlocksPrefix, Decode: func(key string, value []byte) (any, error) {
		cidr, err := parseBlockKey(key)
		if err != nil {
			return nil, nil // not a block: skip
		}
		b, err := DecodeBlock(value)
		if err != nil {
			return nil, err
		}
		if b.Prefix != cidr {
			return nil, fmt.Errorf("block record %s stored under the key of %s", b.Prefix, cidr)
		}
		return b, nil
	}}
}

// NodeBlockSource is BlockSource for the agent of node: each block as
// Block.ForNode gives it, so that the agent (and its syncer, which keeps
// the last value of every key) holds other nodes' blocks without their
// allocations.
func NodeBlockSource(node string) datastore.Source {
	src := BlockSource()
	decode := src.Decode
	src.Decode = func(key string, value []byte) (any, error) {
		v, err := decode(key, value)
		if b, ok := v.(*Block); ok && err == nil {
			return b.ForNode(node), nil
		}
		return v, err
	}
	return src
}
