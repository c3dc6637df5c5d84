package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/calyx-net/calyx/datastore"
)

// readDocuments reads and checks every document of -f FILE (or stdin).
// Nothing is returned unless every document is valid.
func readDocuments(fs *pflag.FlagSet, in io.Reader) ([]datastore.Resource, error) {
	name, _ := fs.GetString("filename")
	if name == "" {
		return nil, usageErr("-f FILE is required (use - for stdin)")
	}
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(in)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	docs, err := datastore.DecodeFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s", prefixEachLine(displayName(name), err.Error()))
	}
	rs := make([]datastore.Resource, len(docs))
	for i, d := range docs {
		rs[i] = d.Resource
	}
	return rs, nil
}

func displayName(name string) string {
	if name == "-" {
		return "stdin"
	}
	return name
}

func prefixEachLine(prefix, s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = prefix + ": " + lines[i]
	}
	return strings.Join(lines, "\n")
}

func runApply(mode datastore.WriteMode) func(context.Context, *globals, *pflag.FlagSet, []string, io.Reader, io.Writer) error {
	return func(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, in io.Reader, out io.Writer) error {
		if len(args) > 0 {
			return usageErr("unexpected arguments %q (resources come from -f FILE)", args)
		}
		rs, err := readDocuments(fs, in)
		if err != nil {
			return err
		}
		c, err := g.client()
		if err != nil {
			return err
		}
		defer c.Close()
		sortForApply(rs)
		if err := c.WriteAll(ctx, rs, mode); err != nil {
			return err
		}
		verb := map[datastore.WriteMode]string{datastore.ModeApply: "applied", datastore.ModeCreate: "created"}[mode]
		for _, r := range rs {
			fmt.Fprintf(out, "%s/%s %s\n", strings.ToLower(string(r.GetKind())), r.GetMeta().Name, verb)
		}
		return nil
	}
}

// sortForApply orders resources as datastore.Kinds (cluster settings and
// pools before what uses them), keeping the file's order within a kind.
func sortForApply(rs []datastore.Resource) {
	rank := map[datastore.Kind]int{}
	for i, k := range datastore.Kinds {
		rank[k] = i
	}
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rank[rs[j].GetKind()] < rank[rs[j-1].GetKind()]; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

func runGet(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	if len(args) < 1 || len(args) > 2 {
		return usageErr("usage: calyxctl get KIND [NAME] [-o table|yaml|json]")
	}
	kind, err := datastore.ParseKind(args[0])
	if err != nil {
		return usageErr("%v", err)
	}
	format, _ := fs.GetString("output")
	if format != "table" && format != "yaml" && format != "json" && format != "wide" {
		return usageErr("-o %q: want table, yaml or json", format)
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	var rs []datastore.Resource
	if len(args) == 2 {
		r, err := c.Get(ctx, kind, args[1])
		if err != nil {
			return err
		}
		rs = []datastore.Resource{r}
	} else if rs, _, err = c.List(ctx, kind); err != nil {
		return err
	}
	// Secrets (BGP passwords) stay off terminals, logs and pasted output;
	// applying the printed "<redacted>" keeps the stored value.
	if show, _ := fs.GetBool("show-secrets"); !show {
		for i, r := range rs {
			if rs[i], err = datastore.Redact(r); err != nil {
				return err
			}
		}
	}
	switch format {
	case "yaml":
		y, err := datastore.EncodeYAML(rs)
		if err != nil {
			return err
		}
		_, err = out.Write(y)
		return err
	case "json":
		var v any = rs
		if len(args) == 2 {
			v = rs[0]
		}
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false) // "<redacted>", not "\u003credacted\u003e"
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	if len(rs) == 0 {
		fmt.Fprintf(os.Stderr, "No %s found.\n", kind.Plural())
		return nil
	}
	return writeTable(out, kind, rs)
}

func runDelete(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, in io.Reader, out io.Writer) error {
	var targets []datastore.Resource
	if f, _ := fs.GetString("filename"); f != "" {
		if len(args) > 0 {
			return usageErr("give either KIND NAME or -f FILE, not both")
		}
		rs, err := readDocuments(fs, in)
		if err != nil {
			return err
		}
		targets = rs
	} else {
		if len(args) != 2 {
			return usageErr("usage: calyxctl delete KIND NAME, or calyxctl delete -f FILE")
		}
		kind, err := datastore.ParseKind(args[0])
		if err != nil {
			return usageErr("%v", err)
		}
		r, _ := datastore.NewResource(kind)
		r.GetMeta().Name = args[1]
		targets = []datastore.Resource{r}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	var problems []string
	for _, r := range targets {
		err := c.Delete(ctx, r.GetKind(), r.GetMeta().Name)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		fmt.Fprintf(out, "%s/%s deleted\n", strings.ToLower(string(r.GetKind())), r.GetMeta().Name)
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// runLabel sets (k=v) or removes (k-) labels, as kubectl label does; an
// existing value changes only with --overwrite.
func runLabel(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	if len(args) < 3 {
		return usageErr("usage: calyxctl label KIND NAME key=value ... key- [--overwrite]")
	}
	kind, err := datastore.ParseKind(args[0])
	if err != nil {
		return usageErr("%v", err)
	}
	overwrite, _ := fs.GetBool("overwrite")
	set := map[string]string{}
	var remove []string
	var problems []string
	for _, a := range args[2:] {
		if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			remove = append(remove, k)
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			problems = append(problems, fmt.Sprintf("%q: want key=value to set or key- to remove", a))
			continue
		}
		if err := datastore.ValidateLabel(k, v); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		set[k] = v
	}
	if len(problems) > 0 {
		return &exitError{2, strings.Join(problems, "\n")}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	for attempt := 0; ; attempt++ {
		r, err := c.Get(ctx, kind, args[1])
		if err != nil {
			return err
		}
		m := r.GetMeta()
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		for _, k := range datastore.SortedLabelKeys(set) {
			if old, exists := m.Labels[k]; exists && old != set[k] && !overwrite {
				return fmt.Errorf("%s already has label %s=%s; use --overwrite to change it", datastore.Describe(r), k, old)
			}
			m.Labels[k] = set[k]
		}
		for _, k := range remove {
			delete(m.Labels, k)
		}
		if _, err = c.Update(ctx, r); errors.Is(err, datastore.ErrConflict) && attempt < 5 {
			continue
		} else if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s/%s labeled\n", strings.ToLower(string(kind)), args[1])
		return nil
	}
}

// writeTable prints resources as an aligned table, one row each.
func writeTable(out io.Writer, kind datastore.Kind, rs []datastore.Resource) error {
	tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	header, row := tableColumns(kind)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rs {
		fmt.Fprintln(tw, strings.Join(row(r), "\t"))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func labelString(l map[string]string) string {
	var parts []string
	for _, k := range datastore.SortedLabelKeys(l) {
		parts = append(parts, k+"="+l[k])
	}
	return orDash(strings.Join(parts, ","))
}

func tableColumns(kind datastore.Kind) ([]string, func(datastore.Resource) []string) {
	switch kind {
	case datastore.KindBGPConfig:
		return []string{"NAME", "ASN", "MESH", "PORT", "GRACEFUL-RESTART", "ADVERTISE-BLOCKS"}, func(r datastore.Resource) []string {
			s := &r.(*datastore.BGPConfig).Spec
			gr := "off"
			if s.GracefulRestartEnabled() {
				gr = fmt.Sprintf("%ds", s.GracefulRestartTime())
			}
			return []string{r.GetMeta().Name, fmt.Sprint(s.EffectiveASNumber()), strconv.FormatBool(s.MeshEnabled()), fmt.Sprint(s.EffectiveListenPort()), gr, strconv.FormatBool(s.BlocksAdvertised())}
		}
	case datastore.KindNode:
		return []string{"NAME", "ADDRESS", "ASN", "RR-CLUSTER-ID", "LABELS"}, func(r datastore.Resource) []string {
			s := &r.(*datastore.Node).Spec
			asn := "(cluster)"
			if s.ASNumber != 0 {
				asn = fmt.Sprint(s.ASNumber)
			}
			return []string{r.GetMeta().Name, s.Address, asn, orDash(s.RouteReflectorClusterID), labelString(r.GetMeta().Labels)}
		}
	case datastore.KindBGPPeer:
		return []string{"NAME", "PEER-IP", "ASN", "NODES", "MD5"}, func(r datastore.Resource) []string {
			s := &r.(*datastore.BGPPeer).Spec
			nodes := "all"
			if s.Node != "" {
				nodes = s.Node
			} else if s.NodeSelector != "" {
				nodes = s.NodeSelector
			}
			return []string{r.GetMeta().Name, s.PeerIP, fmt.Sprint(s.ASNumber), nodes, strconv.FormatBool(s.Password != "")}
		}
	case datastore.KindIPPool:
		return []string{"NAME", "CIDR", "BLOCK-SIZE", "NAT-OUTGOING", "DISABLED", "NODE-SELECTOR"}, func(r datastore.Resource) []string {
			s := &r.(*datastore.IPPool).Spec
			return []string{r.GetMeta().Name, s.CIDR, fmt.Sprint(s.EffectiveBlockSize()), strconv.FormatBool(s.NATOutgoing), strconv.FormatBool(s.Disabled), orDash(s.NodeSelector)}
		}
	case datastore.KindIPAMConfig:
		return []string{"NAME", "STRICT-AFFINITY", "MAX-BLOCKS-PER-HOST"}, func(r datastore.Resource) []string {
			s := &r.(*datastore.IPAMConfig).Spec
			return []string{r.GetMeta().Name, strconv.FormatBool(s.StrictAffinity), fmt.Sprint(s.EffectiveMaxBlocksPerHost())}
		}
	case datastore.KindWorkloadEndpoint:
		return []string{"NAME", "NODE", "WORKLOAD", "INTERFACE", "ADDRESSES", "LABELS"}, func(r datastore.Resource) []string {
			s := &r.(*datastore.WorkloadEndpoint).Spec
			return []string{r.GetMeta().Name, s.Node, s.Workload, s.InterfaceName, orDash(strings.Join(s.IPNetworks, ",")), labelString(r.GetMeta().Labels)}
		}
	default: // Policy
		return []string{"NAME", "ORDER", "SELECTOR", "TYPES", "INGRESS-RULES", "EGRESS-RULES"}, func(r datastore.Resource) []string {
			s := &r.(*datastore.Policy).Spec
			order := "-"
			if s.Order != nil {
				order = strconv.FormatFloat(*s.Order, 'g', -1, 64)
			}
			var types []string
			for _, t := range s.EffectiveTypes() {
				types = append(types, string(t))
			}
			return []string{r.GetMeta().Name, order, orDash(s.Selector), strings.Join(types, ","), fmt.Sprint(len(s.Ingress)), fmt.Sprint(len(s.Egress))}
		}
	}
}
