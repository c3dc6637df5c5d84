package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
)

func ipamFlags(fs *pflag.FlagSet) {
	outputFlag(fs)
	fs.Duration("grace", 15*time.Minute, "ipam gc: only release allocations older than this")
	fs.String("ip", "", "ipam show: who holds this address; ipam release: the address to release")
	fs.String("node", "", "ipam gc: only this node's allocations")
}

func runIPAM(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	if len(args) != 1 {
		return usageErr("usage: calyxctl ipam show|check|gc|release [flags]")
	}
	format, _ := fs.GetString("output")
	if format != "table" && format != "json" {
		return usageErr("-o %q: want table or json", format)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	im := ipam.New(c, slog.New(slog.DiscardHandler))
	switch args[0] {
	case "show":
		if s, _ := fs.GetString("ip"); s != "" {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return usageErr("ipam show: --ip %q is not an IP address", s)
			}
			return showIP(ctx, c, im, ip, format, out)
		}
		u, err := im.Show(ctx)
		if err != nil {
			return err
		}
		if format == "json" {
			return printJSON(out, u)
		}
		return u.WriteTable(out)
	case "check":
		problems, err := im.Check(ctx)
		if err != nil {
			return err
		}
		if format == "json" {
			if problems == nil {
				problems = []ipam.Problem{}
			}
			return printJSON(out, problems)
		}
		if err := ipam.WriteProblems(out, problems); err != nil {
			return err
		}
		if len(problems) > 0 {
			return &exitError{1, fmt.Sprintf("ipam check: %d problem(s) found (calyxctl ipam gc repairs leaked allocations)", len(problems))}
		}
		return nil
	case "gc":
		grace, _ := fs.GetDuration("grace")
		node, _ := fs.GetString("node")
		var rep ipam.Report
		if node != "" {
			rep, err = im.GCNode(ctx, node, grace)
		} else {
			rep, err = im.GC(ctx, grace)
		}
		if err != nil {
			return err
		}
		if format == "json" {
			return printJSON(out, rep)
		}
		return rep.WriteReport(out)
	case "release":
		s, _ := fs.GetString("ip")
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return usageErr("ipam release: --ip %q is not an IP address", s)
		}
		a, err := im.ReleaseIP(ctx, ip)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "released %s (handle %s, node %s)\n", ip, a.Handle, orDash(a.Node))
		return nil
	}
	return usageErr("unknown ipam command %q (show, check, gc, release)", args[0])
}

// ipOwner is what ipam show --ip prints: the IPAM record and what the
// datastore says of its endpoint and pool.
type ipOwner struct {
	ipam.IPInfo
	// Pools are the IPPools whose CIDR holds the address.
	Pools []string `json:"pools"`
	// EndpointExists says whether the WorkloadEndpoint the allocation
	// names exists (false: a leak, which ipam gc releases).
	EndpointExists bool `json:"endpointExists"`
	// Workload is that endpoint's workload, when it exists.
	Workload string `json:"workload,omitempty"`
}

func showIP(ctx context.Context, c *datastore.Client, im *ipam.IPAM, ip netip.Addr, format string, out io.Writer) error {
	info, err := im.LookupIP(ctx, ip)
	if err != nil {
		return err
	}
	o := ipOwner{IPInfo: info, Pools: []string{}}
	pools, _, err := c.List(ctx, datastore.KindIPPool)
	if err != nil {
		return err
	}
	for _, r := range pools {
		p := r.(*datastore.IPPool)
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil && pfx.Contains(info.IP) {
			o.Pools = append(o.Pools, p.Metadata.Name)
		}
	}
	if a := info.Allocation; a != nil && a.Endpoint != "" {
		r, err := c.Get(ctx, datastore.KindWorkloadEndpoint, a.Endpoint)
		switch {
		case err == nil:
			o.EndpointExists, o.Workload = true, r.(*datastore.WorkloadEndpoint).Spec.Workload
		case !errors.Is(err, datastore.ErrNotFound):
			return err
		}
	}
	if format == "json" {
		return printJSON(out, o)
	}
	return writeIPOwner(out, o)
}

func writeIPOwner(out io.Writer, o ipOwner) error {
	pool := "none (no IPPool holds it)"
	if len(o.Pools) > 0 {
		pool = strings.Join(o.Pools, ", ")
	}
	a := o.Allocation
	if a == nil {
		where := "no block holds it yet"
		if o.Block.IsValid() {
			where = fmt.Sprintf("block %s, affinity %s", o.Block, orDash(o.BlockAffinity))
		}
		_, err := fmt.Fprintf(out, "%s is not allocated (pool %s; %s)\n", o.IP, pool, where)
		return err
	}
	endpoint := orDash(a.Endpoint)
	switch {
	case a.Endpoint != "" && o.EndpointExists:
		endpoint += " (workload " + orDash(o.Workload) + ")"
	case a.Endpoint != "":
		endpoint += " (MISSING: a leaked address; calyxctl ipam gc releases it)"
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"IP", o.IP.String() + " (allocated)"},
		{"NODE", orDash(a.Node)},
		{"HANDLE", a.Handle},
		{"ENDPOINT", endpoint},
		{"POD", podOf(a.Namespace, a.Pod)},
		{"BLOCK", fmt.Sprintf("%s (affinity %s)", o.Block, orDash(o.BlockAffinity))},
		{"POOL", pool},
		{"BORROWED", yesNo(a.Borrowed)},
		{"SINCE", a.Time.UTC().Format(time.RFC3339)},
	}
	if !o.HandleListsIt {
		rows = append(rows, [2]string{"WARNING", "the handle's record does not list this address (calyxctl ipam gc repairs it)"})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func podOf(ns, pod string) string {
	if pod == "" {
		return "-"
	}
	return ns + "/" + pod
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printJSON(out io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(out, string(b))
	return nil
}
