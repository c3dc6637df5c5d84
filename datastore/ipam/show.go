package ipam

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"strings"
	"text/tabwriter"
)

// Usage is what calyxctl ipam show prints (-o json marshals it as is).
type Usage struct {
	Pools  []PoolUsage  `json:"pools"`
	Blocks []BlockUsage `json:"blocks"`
	Nodes  []NodeUsage  `json:"nodes"`
}

// PoolUsage is one pool's use. Size and Free are big numbers: an IPv6 pool
// holds more than 2^64 addresses.
type PoolUsage struct {
	Name      string       `json:"name"`
	CIDR      netip.Prefix `json:"cidr"`
	BlockSize int          `json:"blockSize"`
	Disabled  bool         `json:"disabled,omitempty"`
	Size      *big.Int     `json:"size"`
	Used      int          `json:"used"`
	Free      *big.Int     `json:"free"`
	Blocks    int          `json:"blocks"`
}

// BlockUsage is one block's use.
type BlockUsage struct {
	CIDR netip.Prefix `json:"cidr"`
	Pool string       `json:"pool,omitempty"`
	// Node is the block's affinity ("" for none).
	Node string `json:"node,omitempty"`
	Used int    `json:"used"`
	Free int    `json:"free"`
	// Borrowed counts addresses other nodes took from the block.
	Borrowed int `json:"borrowed,omitempty"`
}

// NodeUsage is one node's share.
type NodeUsage struct {
	Node string `json:"node"`
	// Blocks the node holds, and Addresses its workloads use (borrowed
	// ones included).
	Blocks    int `json:"blocks"`
	Addresses int `json:"addresses"`
	// Borrowed counts addresses it took from other nodes' blocks.
	Borrowed int `json:"borrowed,omitempty"`
}

// Show reads every pool and block and sums up their use.
func (i *IPAM) Show(ctx context.Context) (*Usage, error) {
	st, err := readState(ctx, i.etcd)
	if err != nil {
		return nil, err
	}
	return st.usage(), nil
}

func (st *clusterState) usage() *Usage {
	u := &Usage{Pools: []PoolUsage{}, Blocks: []BlockUsage{}, Nodes: []NodeUsage{}}
	poolIdx := map[string]int{}
	for _, p := range st.pools {
		poolIdx[p.name] = len(u.Pools)
		u.Pools = append(u.Pools, PoolUsage{Name: p.name, CIDR: p.cidr, BlockSize: p.blockBits, Disabled: p.disabled, Size: prefixSize(p.cidr)})
	}
	nodes := map[string]*NodeUsage{}
	nodeOf := func(n string) *NodeUsage {
		if nodes[n] == nil {
			nodes[n] = &NodeUsage{Node: n}
		}
		return nodes[n]
	}
	for _, cidr := range sortedPrefixes(st.blocks) {
		b := st.blocks[cidr]
		bu := BlockUsage{CIDR: cidr, Node: b.Affinity, Used: b.Used(), Free: b.Free()}
		if p := st.poolOf(cidr.Addr()); p != nil {
			bu.Pool = p.name
			pu := &u.Pools[poolIdx[p.name]]
			pu.Used += b.Used()
			pu.Blocks++
		}
		for _, a := range b.Allocations {
			if a.Borrowed {
				bu.Borrowed++
			}
			if a.Node != "" {
				nu := nodeOf(a.Node)
				nu.Addresses++
				if a.Borrowed {
					nu.Borrowed++
				}
			}
		}
		if b.Affinity != "" {
			nodeOf(b.Affinity).Blocks++
		}
		u.Blocks = append(u.Blocks, bu)
	}
	for k := range u.Pools {
		u.Pools[k].Free = new(big.Int).Sub(u.Pools[k].Size, big.NewInt(int64(u.Pools[k].Used)))
	}
	for _, n := range sortedKeys(nodes) {
		u.Nodes = append(u.Nodes, *nodes[n])
	}
	return u
}

// WriteTable prints the usage as three aligned tables: pools, blocks, nodes.
func (u *Usage) WriteTable(w io.Writer) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "POOL\tCIDR\tBLOCK SIZE\tSIZE\tUSED\tFREE\tBLOCKS\tDISABLED")
	for _, p := range u.Pools {
		fmt.Fprintf(tw, "%s\t%s\t/%d\t%s\t%d (%s)\t%s\t%d\t%t\n", p.Name, p.CIDR, p.BlockSize, p.Size, p.Used, percent(p.Used, p.Size), p.Free, p.Blocks, p.Disabled)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "BLOCK\tPOOL\tNODE\tUSED\tFREE\tBORROWED")
	for _, b := range u.Blocks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", b.CIDR, dash(b.Pool), dash(b.Node), b.Used, b.Free, b.Borrowed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "NODE\tBLOCKS\tADDRESSES\tBORROWED")
	for _, n := range u.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", n.Node, n.Blocks, n.Addresses, n.Borrowed)
	}
	return tw.Flush()
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// WriteProblems prints what Check found, one aligned line per problem.
func WriteProblems(w io.Writer, problems []Problem) error {
	if len(problems) == 0 {
		_, err := fmt.Fprintln(w, "no IPAM inconsistency found")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "KIND\tSUBJECT\tNODE\tADDRESSES\tGC REPAIRS\tDETAIL")
	for _, p := range problems {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Kind, p.Subject, dash(p.Node), addrList(p.Addresses), yesNo(p.GCRepairs), p.Detail)
	}
	return tw.Flush()
}

// WriteReport prints what GC did.
func (r *Report) WriteReport(w io.Writer) error {
	if r.Waiting != "" {
		fmt.Fprintf(w, "IPAM gc released nothing: %s\n", r.Waiting)
	}
	if r.Empty() && len(r.Kept) == 0 {
		if r.Waiting == "" {
			_, err := fmt.Fprintln(w, "IPAM gc: nothing to do")
			return err
		}
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ACTION\tSUBJECT\tNODE\tADDRESSES\tDETAIL")
	for _, h := range r.Released {
		fmt.Fprintf(tw, "released\t%s\t%s\t%s\tendpoint %q missing, age %s\n", h.Handle, dash(h.Node), addrList(h.Addresses), h.Endpoint, h.Age)
	}
	for _, ip := range r.FreedOrphans {
		fmt.Fprintf(tw, "freed\t%s\t-\t%s\thandle record missing\n", ip, ip)
	}
	for _, id := range r.RestoredHandles {
		fmt.Fprintf(tw, "restored handle\t%s\t-\t-\trecord rebuilt from its block entries\n", id)
	}
	for _, id := range r.FixedHandles {
		fmt.Fprintf(tw, "fixed handle\t%s\t-\t-\tdropped addresses it did not hold\n", id)
	}
	for _, c := range r.ReleasedBlocks {
		fmt.Fprintf(tw, "released block\t%s\t-\t-\tempty block of no registered node\n", c)
	}
	for _, k := range r.FixedAffinities {
		fmt.Fprintf(tw, "fixed affinity\t%s\t-\t-\tmade to match its block\n", k)
	}
	for _, k := range r.Kept {
		fmt.Fprintf(tw, "kept\t%s\t%s\t-\t%s\n", k.Handle, dash(k.Node), k.Reason)
	}
	if r.Skipped > 0 {
		fmt.Fprintf(tw, "skipped\t%d records\t-\t-\tchanged during gc; the next run looks again\n", r.Skipped)
	}
	return tw.Flush()
}

func percent(used int, size *big.Int) string {
	f, _ := new(big.Float).Quo(big.NewFloat(float64(used)), new(big.Float).SetInt(size)).Float64()
	return fmt.Sprintf("%.1f%%", 100*f)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "-"
	}
	s := make([]string, len(as))
	for k, a := range as {
		s[k] = a.String()
	}
	return strings.Join(s, ",")
}
