package ipam

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"net/netip"
)

// Family is an IP version: 4 or 6.
type Family int

const (
	V4 Family = 4
	V6 Family = 6
)

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return V4
	}
	return V6
}

func (f Family) String() string { return fmt.Sprintf("IPv%d", int(f)) }

// maxBlockHostBits bounds a block to 4096 addresses (the validation range of
// blockSize: /20../32 and /116../128), so an ordinal fits an int and a
// block's record stays well under etcd's request size limit.
const maxBlockHostBits = 12

// hostBits is the number of address bits inside the prefix.
func hostBits(p netip.Prefix) int { return p.Addr().BitLen() - p.Bits() }

// low64 is the low 64 bits of an address (all of an IPv4 address).
func low64(a netip.Addr) uint64 {
	if a.Is4() {
		b := a.As4()
		return uint64(binary.BigEndian.Uint32(b[:]))
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[8:])
}

// addLow adds n to an address, carrying into the high half of an IPv6
// address. It is only used within a prefix, so it never overflows.
func addLow(a netip.Addr, n uint64) netip.Addr {
	if a.Is4() {
		b := a.As4()
		binary.BigEndian.PutUint32(b[:], uint32(uint64(binary.BigEndian.Uint32(b[:]))+n))
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	lo := binary.BigEndian.Uint64(b[8:])
	sum := lo + n
	if sum < lo {
		binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(b[:8])+1)
	}
	binary.BigEndian.PutUint64(b[8:], sum)
	return netip.AddrFrom16(b)
}

// ordinal is the index of ip inside the (aligned, <= 4096 addresses) block.
func ordinal(block netip.Prefix, ip netip.Addr) int {
	return int(low64(ip) - low64(block.Addr()))
}

// addrAt is the address with index ord in the block.
func addrAt(block netip.Prefix, ord int) netip.Addr {
	return addLow(block.Addr(), uint64(ord))
}

// blockOf is the block of the given size that holds ip.
func blockOf(ip netip.Addr, blockBits int) netip.Prefix {
	return netip.PrefixFrom(ip, blockBits).Masked()
}

// prefixSize is the number of addresses in p, as a big number (an IPv6 pool
// holds far more than 2^64).
func prefixSize(p netip.Prefix) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(hostBits(p)))
}

// maxCandidateBlocks bounds how many block positions of one pool are
// considered for a claim (2^20 /26 blocks are 64M addresses).
const maxCandidateBlocks = 1 << 20

// blockCount is the number of blocks of blockBits in pool, capped at
// maxCandidateBlocks.
func blockCount(pool netip.Prefix, blockBits int) uint64 {
	n := blockBits - pool.Bits()
	if n >= 20 {
		return maxCandidateBlocks
	}
	return 1 << n
}

// nthBlock is block number i of the pool.
func nthBlock(pool netip.Prefix, blockBits int, i uint64) netip.Prefix {
	shift := pool.Addr().BitLen() - blockBits
	return netip.PrefixFrom(addLow(pool.Masked().Addr(), i<<shift), blockBits)
}
