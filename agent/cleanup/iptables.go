package cleanup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// ownPrefix starts every chain and set Calyx creates.
const ownPrefix = "cx-"

// iptablesTables are the tables searched; the agent writes raw, nat and
// filter, but a chain of ours anywhere is ours.
var iptablesTables = []string{"raw", "mangle", "nat", "filter", "security"}

// iptablesFor opens the iptables (or ip6tables) of the chosen backend and
// says which tables to search.
func (c *cleaner) iptablesFor(f Family) (*iptables.IPTables, []string, error) {
	proto, name := iptables.ProtocolIPv4, "iptables"
	if f == IPv6 {
		proto, name = iptables.ProtocolIPv6, "ip6tables"
	}
	switch c.o.IptablesBackend {
	case "", "auto":
	case "nft", "legacy":
		name += "-" + c.o.IptablesBackend
	default:
		return nil, nil, fmt.Errorf("iptables backend %q: want auto, nft or legacy", c.o.IptablesBackend)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, nil, err
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path), iptables.Timeout(10))
	if err != nil {
		return nil, nil, err
	}
	tables := iptablesTables
	if isLegacy(path) {
		// Listing a table legacy iptables has not loaded creates it:
		// search only the loaded ones.
		tables = loadedLegacyTables(f)
	}
	return ipt, tables, nil
}

func isLegacy(path string) bool {
	out, err := exec.Command(path, "--version").Output()
	return err == nil && strings.Contains(string(out), "legacy")
}

// loadedLegacyTables lists the x_tables tables of the namespace, in the
// order of iptablesTables.
func loadedLegacyTables(f Family) []string {
	file := "/proc/net/ip_tables_names"
	if f == IPv6 {
		file = "/proc/net/ip6_tables_names"
	}
	b, _ := os.ReadFile(file) // missing: no legacy table is loaded
	loaded := strings.Fields(string(b))
	var out []string
	for _, t := range iptablesTables {
		if slices.Contains(loaded, t) {
			out = append(out, t)
		}
	}
	return out
}

// iptables deletes, in every table of one family, the rules of other
// chains that jump to a cx- chain (the hooks), then every cx- chain.
func (c *cleaner) iptables(ctx context.Context, f Family) error {
	ipt, tables, err := c.iptablesFor(f)
	if err != nil {
		if f == IPv6 && errors.Is(err, exec.ErrNotFound) {
			return nil // no ip6tables: no IPv6 rules of ours either
		}
		return fmt.Errorf("IPv%d iptables: %w", f, err)
	}
	var errs []error
	for _, table := range tables {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := c.iptablesTable(ipt, f, table); err != nil {
			errs = append(errs, fmt.Errorf("IPv%d %s table: %w", f, table, err))
		}
	}
	return errors.Join(errs...)
}

func (c *cleaner) iptablesTable(ipt *iptables.IPTables, f Family, table string) error {
	chains, err := ipt.ListChains(table)
	if err != nil {
		if tableMissing(err) {
			return nil
		}
		return err
	}
	var ours []string
	var errs []error
	for _, chain := range chains {
		if strings.HasPrefix(chain, ownPrefix) {
			ours = append(ours, chain)
			continue
		}
		rules, err := ipt.List(table, chain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, line := range rules {
			spec, ok := jumpsToOurs(line, chain)
			if !ok {
				continue
			}
			if !c.o.DryRun {
				// By spec, not by number: another program may be adding
				// rules to the same chain meanwhile.
				if err := ipt.DeleteIfExists(table, chain, spec...); err != nil {
					errs = append(errs, fmt.Errorf("deleting %q: %w", line, err))
					continue
				}
			}
			c.report.Rules++
			c.did("IPv%d %s rule: %s", f, table, line)
		}
	}
	if len(errs) > 0 {
		// A hook still jumping to a chain of ours keeps it from going.
		return errors.Join(errs...)
	}
	// Flush every chain of ours before deleting any: they jump to each
	// other.
	if !c.o.DryRun {
		for _, chain := range ours {
			if err := ipt.ClearChain(table, chain); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, chain := range ours {
		if !c.o.DryRun {
			if err := ipt.DeleteChain(table, chain); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		c.report.Chains++
		c.did("IPv%d %s chain %s", f, table, chain)
	}
	return errors.Join(errs...)
}

// tableMissing reports an error listing a table the kernel does not have
// (legacy iptables without the table's module).
func tableMissing(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Table does not exist") || strings.Contains(msg, "can't initialize")
}

// jumpsToOurs parses one line of `iptables -S CHAIN` and returns the rule
// spec (without "-A CHAIN") when its target is a cx- chain.
func jumpsToOurs(line, chain string) ([]string, bool) {
	args := splitRule(line)
	if len(args) < 2 || args[0] != "-A" || args[1] != chain {
		return nil, false
	}
	spec := args[2:]
	for i := 0; i+1 < len(spec); i++ {
		if (spec[i] == "-j" || spec[i] == "-g") && strings.HasPrefix(spec[i+1], ownPrefix) {
			return spec, true
		}
	}
	return nil, false
}

// splitRule splits an iptables -S line into arguments the way a shell
// would: iptables quotes arguments with spaces (comments) in double
// quotes and escapes quotes and backslashes inside them.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQuote, have = !inQuote, true
		case ch == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
