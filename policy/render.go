package policy

import (
	"maps"
	"slices"
	"strings"

	"github.com/calyx-net/calyx/datastore"
)

// Rendered is the complete desired state for one input, as pure data: what
// golden tests, the simulator and the raw-restore benchmark peer read.
type Rendered struct {
	m *model
}

// Render computes the chains and sets for the given input without touching
// the kernel.
func Render(cfg Config, policies []*datastore.Policy, endpoints []*datastore.WorkloadEndpoint, pools []*datastore.IPPool) (*Rendered, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := newModel(&c)
	for _, p := range policies {
		if err := m.setPolicy(p); err != nil {
			return nil, err
		}
	}
	for _, w := range endpoints {
		if err := m.setEndpoint(w); err != nil {
			return nil, err
		}
	}
	if err := m.setPools(pools); err != nil {
		return nil, err
	}
	m.refresh()
	return &Rendered{m: m}, nil
}

// Families lists the families rendered.
func (r *Rendered) Families() []Family { return r.m.families }

// Chains returns one table's chains sorted by name.
func (r *Rendered) Chains(f Family, t Table) []*Chain {
	return sortedChains(r.m.want.chains[f][t])
}

// Sets returns every set sorted by name.
func (r *Rendered) Sets() []*IPSet {
	names := slices.Sorted(maps.Keys(r.m.want.sets))
	out := make([]*IPSet, len(names))
	for i, n := range names {
		out[i] = r.m.want.sets[n]
	}
	return out
}

// RestoreText is one table as iptables-restore --noflush input that installs
// everything from scratch, hooks included.
func (r *Rendered) RestoreText(f Family, t Table) string {
	var sb strings.Builder
	chains := r.Chains(f, t)
	writeTableBatch(&sb, t, chains, nil, missingHooks(t))
	return sb.String()
}

// RuleCount is the number of rules across every table and family.
func (r *Rendered) RuleCount() int {
	n := 0
	for _, byTable := range r.m.want.chains {
		for _, chains := range byTable {
			for _, c := range chains {
				n += len(c.Lines)
			}
		}
	}
	return n
}

func sortedChains(m map[string]*Chain) []*Chain {
	names := slices.Sorted(maps.Keys(m))
	out := make([]*Chain, len(names))
	for i, n := range names {
		out[i] = m[n]
	}
	return out
}

// hookLine is the rule in a built-in chain that jumps to ours, without the
// leading "-A|-I <builtin>".
func hookLine(h hook) string {
	return `-m comment --comment "` + hookSpec(h)[3] + `" -j ` + h.target
}

func missingHooks(t Table) []hook {
	var out []hook
	for _, h := range hooks {
		if h.table == t {
			out = append(out, h)
		}
	}
	return out
}

// writeTableBatch writes one table's changes: declare (create or flush) the
// chains to write and to delete, fill the ones to write, delete the others,
// then insert missing hooks and delete stale ones. Deletions come after the
// rewrites that drop references to them; hooks after the chains they jump
// to exist.
func writeTableBatch(sb *strings.Builder, t Table, write []*Chain, del []string, addHooks []hook, staleHooks ...string) {
	sb.WriteString("*")
	sb.WriteString(string(t))
	sb.WriteByte('\n')
	for _, c := range write {
		sb.WriteString(":")
		sb.WriteString(c.Name)
		sb.WriteString(" - [0:0]\n")
	}
	for _, name := range del {
		sb.WriteString(":")
		sb.WriteString(name)
		sb.WriteString(" - [0:0]\n")
	}
	for _, c := range write {
		for _, l := range c.Lines {
			sb.WriteString(l)
			sb.WriteByte('\n')
		}
	}
	for _, line := range staleHooks {
		sb.WriteString(line)
		sb.WriteByte('\n')
	}
	for _, name := range del {
		sb.WriteString("-X ")
		sb.WriteString(name)
		sb.WriteByte('\n')
	}
	for _, h := range addHooks {
		sb.WriteString("-I ")
		sb.WriteString(h.builtin)
		sb.WriteString(" 1 ")
		sb.WriteString(hookLine(h))
		sb.WriteByte('\n')
	}
	sb.WriteString("COMMIT\n")
}
