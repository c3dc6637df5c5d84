package policy

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/calyx-net/calyx/routes/netns"
)

// iptablesTool is the iptables command of one family and backend, found
// and checked at start with go-iptables. go-iptables runs it for the few
// hook rules in built-in chains (Exists/InsertUnique); the chains
// themselves are written in bulk by iptables-restore.
type iptablesTool struct {
	ipt     *iptables.IPTables
	path    string
	version [3]int
	mode    string // "nf_tables" or "legacy"
}

// minIptables is the oldest iptables Calyx runs with: iptables-restore
// takes -w (wait for the xtables lock) from 1.6.2 on.
var minIptables = [3]int{1, 6, 2}

// findIptables locates and checks the iptables (ip6tables) command of the
// backend.
func findIptables(b Backend, f Family, lockWait int) (*iptablesTool, error) {
	name, proto := "iptables", iptables.ProtocolIPv4
	if f == V6 {
		name, proto = "ip6tables", iptables.ProtocolIPv6
	}
	if b != BackendDefault {
		name += "-" + string(b)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("iptables backend %q: %w (install iptables)", b, err)
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path), iptables.Timeout(lockWait))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v1, v2, v3 := ipt.GetIptablesVersion()
	t := &iptablesTool{ipt: ipt, path: path, version: [3]int{v1, v2, v3}, mode: iptablesMode(path, b)}
	if slices.Compare(t.version[:], minIptables[:]) < 0 {
		return nil, fmt.Errorf("%s is version %d.%d.%d; Calyx needs %d.%d.%d or later (iptables-restore -w)",
			path, v1, v2, v3, minIptables[0], minIptables[1], minIptables[2])
	}
	return t, nil
}

// iptablesMode says which kernel interface the command drives. go-iptables
// reads it from `--version` but keeps it to itself, so it is told by the
// binary the command resolves to (Debian's alternatives link iptables to
// xtables-nft-multi or xtables-legacy-multi); iptables before 1.8 knew only
// legacy.
func iptablesMode(path string, b Backend) string {
	switch b {
	case BackendNFT:
		return "nf_tables"
	case BackendLegacy:
		return "legacy"
	}
	if real, err := filepath.EvalSymlinks(path); err == nil && strings.Contains(filepath.Base(real), "nft") {
		return "nf_tables"
	}
	return "legacy"
}

func (t *iptablesTool) String() string {
	return fmt.Sprintf("%s %d.%d.%d (%s)", t.path, t.version[0], t.version[1], t.version[2], t.mode)
}

// hookWriter inserts the hook rules with go-iptables, inside the namespace
// the dataplane programs.
type hookWriter struct {
	nsPath string
	tools  map[Family]*iptablesTool
}

func newHookWriter(nsPath string, b Backend, families []Family, lockWait int, log *slog.Logger) (*hookWriter, error) {
	w := &hookWriter{nsPath: nsPath, tools: map[Family]*iptablesTool{}}
	for _, f := range families {
		t, err := findIptables(b, f, lockWait)
		if err != nil {
			return nil, err
		}
		w.tools[f] = t
		log.Info("iptables found", "family", fmt.Sprintf("IPv%d", f), "command", t.path,
			"version", fmt.Sprintf("%d.%d.%d", t.version[0], t.version[1], t.version[2]), "mode", t.mode)
	}
	return w, nil
}

// insert puts each hook first in its built-in chain unless it is there
// already. The chains they jump to must exist.
func (w *hookWriter) insert(ctx context.Context, f Family, hs []hook) error {
	t := w.tools[f]
	return netns.Do(w.nsPath, func() error {
		for _, h := range hs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := t.ipt.InsertUnique(string(h.table), h.builtin, 1, hookSpec(h)...); err != nil {
				return fmt.Errorf("hook %s/%s -> %s: %w", h.table, h.builtin, h.target, err)
			}
		}
		return nil
	})
}

// hookSpec is hookLine as arguments.
func hookSpec(h hook) []string {
	return []string{"-m", "comment", "--comment", commentPrefix + ruleHash("", h.builtin, "-j "+h.target), "-j", h.target}
}
