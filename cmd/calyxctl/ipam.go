package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/datastore/ipam"
)

func ipamFlags(fs *pflag.FlagSet) {
	outputFlag(fs)
	fs.Duration("grace", 15*time.Minute, "ipam gc: only release allocations older than this")
	fs.String("ip", "", "ipam release: the address to release")
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

func printJSON(out io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintln(out, string(b))
	return nil
}
