package policy

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/calyx-net/calyx/datastore"
)

// stepWalk changes one thing at a time, as the datastore does: a policy
// set, replaced or deleted; an endpoint added, relabelled, given another
// address, moved to or from this node, or deleted. It keeps the current
// resources so that a fresh Render can say what the kernel should hold.
type stepWalk struct {
	r         *rand.Rand
	cfg       Config
	policies  map[string]*datastore.Policy
	endpoints map[string]*datastore.WorkloadEndpoint
	pools     []*datastore.IPPool
}

func newStepWalk(seed uint64) *stepWalk {
	r := rand.New(rand.NewPCG(seed, 99))
	m := genModel(r)
	return &stepWalk{r: r, cfg: m.cfg, policies: map[string]*datastore.Policy{},
		endpoints: map[string]*datastore.WorkloadEndpoint{}, pools: m.pools}
}

// step makes one change to d. It returns what it did and, when it set a
// local endpoint, that endpoint's name (the caller may program it the way
// CNI ADD does).
func (w *stepWalk) step(d *Dataplane) (what, local string, err error) {
	r := w.r
	switch n := r.IntN(10); {
	case n < 5: // set an endpoint: new, relabelled, readdressed or moved
		i := r.IntN(8)
		name := fmt.Sprintf("ep%d", i)
		labels := map[string]string{}
		for k, vs := range genLabelV {
			if r.IntN(3) > 0 {
				labels[k] = pick(r, vs)
			}
		}
		node := "node-a"
		if r.IntN(3) == 0 {
			node = "node-b"
		}
		ips := []string{fmt.Sprintf("10.244.%d.%d/32", i%2, i+1)}
		if r.IntN(2) == 0 {
			ips = append(ips, fmt.Sprintf("fd00:244::%x/128", i+1))
		}
		ep := &datastore.WorkloadEndpoint{
			Metadata: datastore.Metadata{Name: name, Labels: labels},
			Spec:     datastore.WorkloadEndpointSpec{Node: node, InterfaceName: fmt.Sprintf("cx%011x", i), IPNetworks: ips},
		}
		if err := d.SetEndpoint(ep); err != nil {
			return "", "", err
		}
		w.endpoints[name] = ep
		if node == w.cfg.NodeName {
			local = name
		}
		return fmt.Sprintf("set endpoint %s %v on %s %v", name, labels, node, ips), local, nil
	case n < 6: // delete an endpoint
		name := fmt.Sprintf("ep%d", r.IntN(8))
		d.DeleteEndpoint(name)
		delete(w.endpoints, name)
		return "delete endpoint " + name, "", nil
	case n < 9: // set a policy: new or replaced by another version
		name := fmt.Sprintf("pol-%d", r.IntN(5))
		var p *datastore.Policy
		for p == nil {
			if m := genModel(r); len(m.policies) > 0 {
				p = m.policies[0]
			}
		}
		p.Metadata.Name = name
		if err := d.SetPolicy(p); err != nil {
			return "", "", err
		}
		w.policies[name] = p
		return fmt.Sprintf("set policy %s selector %q types %v", name, p.Spec.Selector, p.Spec.EffectiveTypes()), "", nil
	default: // delete a policy
		name := fmt.Sprintf("pol-%d", r.IntN(5))
		d.DeletePolicy(name)
		delete(w.policies, name)
		return "delete policy " + name, "", nil
	}
}

// render is a fresh rendering of the walk's current resources.
func (w *stepWalk) render() (*Rendered, error) {
	var pols []*datastore.Policy
	for _, name := range slices.Sorted(maps.Keys(w.policies)) {
		pols = append(pols, w.policies[name])
	}
	var eps []*datastore.WorkloadEndpoint
	for _, name := range slices.Sorted(maps.Keys(w.endpoints)) {
		eps = append(eps, w.endpoints[name])
	}
	return Render(w.cfg, pols, eps, w.pools)
}

// strictKernel is a fake kernel for unit tests that keeps our sets and
// chains as the batches leave them and refuses, as the kernel does, a rule
// naming a set that does not exist (or is of the other family), a member
// written to a missing set, a set destroyed while a rule names it, and a
// chain deleted while a rule jumps to it. It also refuses a set flushed
// while a rule names it, which the kernel would take: for a moment that
// set would match nothing. Save commands print nothing: it starts empty.
type strictKernel struct {
	mu      sync.Mutex
	sets    map[string]*kernelSet
	tables  map[string]map[string][]string // "<family> <table>" -> chain -> "-A" lines
	created int                            // rule sets (cx-s-, cx-n-) created
	gone    int                            // and destroyed
}

func newStrictKernel() *strictKernel {
	return &strictKernel{sets: map[string]*kernelSet{}, tables: map[string]map[string][]string{}}
}

func (k *strictKernel) Run(_ context.Context, stdin []byte, argv ...string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch cmd := argv[0]; {
	case strings.HasSuffix(cmd, "-save") || (cmd == "ipset" && argv[len(argv)-1] == "save"):
		return nil, nil
	case cmd == "ipset":
		return nil, k.ipsetRestore(string(stdin))
	case strings.HasPrefix(cmd, "ip6tables"):
		return nil, k.iptablesRestore(V6, string(stdin))
	case strings.HasPrefix(cmd, "iptables"):
		return nil, k.iptablesRestore(V4, string(stdin))
	}
	return nil, fmt.Errorf("strict kernel: unexpected command %v", argv)
}

// inUse reports whether a rule in any table names the set.
func (k *strictKernel) inUse(set string) bool {
	for _, chains := range k.tables {
		for _, lines := range chains {
			for _, l := range lines {
				if slices.Contains(matchSetNames(l), set) {
					return true
				}
			}
		}
	}
	return false
}

func isRuleSet(name string) bool {
	return strings.HasPrefix(name, "cx-s-") || strings.HasPrefix(name, "cx-s6-") ||
		strings.HasPrefix(name, "cx-n-") || strings.HasPrefix(name, "cx-n6-")
}

func (k *strictKernel) ipsetRestore(text string) error {
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			return fmt.Errorf("ipset: bad line %q", line)
		}
		s := k.sets[f[1]]
		if f[0] != "create" && s == nil {
			return fmt.Errorf("ipset: %q: set %s does not exist", line, f[1])
		}
		switch f[0] {
		case "create":
			if s == nil {
				fam := V4
				if slices.Contains(f, "inet6") {
					fam = V6
				}
				k.sets[f[1]] = &kernelSet{typ: f[2], family: fam, members: map[SetMember]struct{}{}}
				if isRuleSet(f[1]) {
					k.created++
				}
			}
		case "flush":
			if k.inUse(f[1]) {
				return fmt.Errorf("ipset: %q: flushing a set rules use", line)
			}
			clear(s.members)
		case "add", "del":
			m, err := parseMember(s.typ, f[2])
			if err != nil {
				return fmt.Errorf("ipset: %q: %w", line, err)
			}
			if f[0] == "add" {
				s.members[m] = struct{}{}
			} else {
				delete(s.members, m)
			}
		case "swap":
			o := k.sets[f[2]]
			if o == nil || o.typ != s.typ || o.family != s.family {
				return fmt.Errorf("ipset: %q: no set of the same kind to swap with", line)
			}
			k.sets[f[1]], k.sets[f[2]] = o, s
		case "destroy":
			if k.inUse(f[1]) {
				return fmt.Errorf("ipset: %q: set is in use by a kernel component", line)
			}
			delete(k.sets, f[1])
			if isRuleSet(f[1]) {
				k.gone++
			}
		default:
			return fmt.Errorf("ipset: unknown command %q", line)
		}
	}
	return nil
}

// jumpsTo reports whether a rule of chains jumps or goes to chain.
func jumpsTo(chains map[string][]string, chain string) bool {
	for _, lines := range chains {
		for _, l := range lines {
			f := strings.Fields(l)
			for i := 0; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && f[i+1] == chain {
					return true
				}
			}
		}
	}
	return false
}

// iptablesRestore plays one --noflush batch: each table section is checked
// rule by rule and committed whole.
func (k *strictKernel) iptablesRestore(fam Family, text string) error {
	var key string
	var cur map[string][]string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			key = fmt.Sprintf("%d %s", fam, line[1:])
			cur = maps.Clone(k.tables[key])
			if cur == nil {
				cur = map[string][]string{}
			}
		case line == "COMMIT":
			k.tables[key] = cur
		case strings.HasPrefix(line, ":"):
			cur[strings.Fields(line[1:])[0]] = nil // create or flush
		case strings.HasPrefix(line, "-A "):
			chain := strings.Fields(line)[1]
			if _, ok := cur[chain]; !ok {
				return fmt.Errorf("IPv%d %s: %q: no chain %s", fam, key, line, chain)
			}
			for _, set := range matchSetNames(line) {
				if s := k.sets[set]; s == nil || s.family != fam {
					return fmt.Errorf("IPv%d %s: %q: set %s does not exist in this family", fam, key, line, set)
				}
			}
			cur[chain] = append(slices.Clip(cur[chain]), line)
		case strings.HasPrefix(line, "-X "):
			chain := strings.TrimPrefix(line, "-X ")
			if _, ok := cur[chain]; !ok {
				return fmt.Errorf("IPv%d %s: %q: no such chain", fam, key, line)
			}
			delete(cur, chain)
			if jumpsTo(cur, chain) {
				return fmt.Errorf("IPv%d %s: %q: chain is still referenced", fam, key, line)
			}
		case strings.HasPrefix(line, "-I "), strings.HasPrefix(line, "-D "):
			// Hooks in built-in chains: not ours to model.
		default:
			return fmt.Errorf("IPv%d: unexpected line %q", fam, line)
		}
	}
	return nil
}

// strictMembers is the netlink member writer against a strictKernel: a
// member of a set that does not exist is refused, as the kernel does.
type strictMembers struct{ k *strictKernel }

func (w strictMembers) writeMembers(_ context.Context, ops []setOp) error {
	w.k.mu.Lock()
	defer w.k.mu.Unlock()
	for _, op := range ops {
		s := w.k.sets[op.set.Name]
		if s == nil {
			return fmt.Errorf("netlink: set %s does not exist", op.set.Name)
		}
		for _, m := range op.adds {
			s.members[m] = struct{}{}
		}
		for _, m := range op.dels {
			delete(s.members, m)
		}
	}
	return nil
}

// differsFrom says how the kernel differs from a fresh rendering.
func (k *strictKernel) differsFrom(r *Rendered) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	left := maps.Clone(k.sets)
	for _, want := range r.Sets() {
		got := left[want.Name]
		delete(left, want.Name)
		if got == nil || got.typ != want.Type || !maps.Equal(got.members, want.Members) {
			out = append(out, fmt.Sprintf("set %s: kernel %v, render %v", want.Name, got, want.Members))
		}
	}
	for name := range left {
		out = append(out, "set "+name+": kernel has it, render does not")
	}
	for _, f := range r.Families() {
		for _, t := range tables {
			chains := maps.Clone(k.tables[fmt.Sprintf("%d %s", f, t)])
			for _, c := range r.Chains(f, t) {
				if got, ok := chains[c.Name]; !ok || !slices.Equal(got, c.Lines) {
					out = append(out, fmt.Sprintf("IPv%d %s chain %s differs", f, t, c.Name))
				}
				delete(chains, c.Name)
			}
			for name := range chains {
				out = append(out, fmt.Sprintf("IPv%d %s chain %s: kernel has it, render does not", f, t, name))
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// TestRandomStepsKeepSetsBeforeChains walks a Dataplane through random
// single changes against a strict fake kernel: no write may name a set
// before it exists, destroy or flush one a rule still names, or write a
// member to a missing set (the netlink fast path included), and after each
// Apply (or ProgramEndpoint) the kernel must hold exactly what a fresh
// Render gives, so sets are there only for active policies.
func TestRandomStepsKeepSetsBeforeChains(t *testing.T) {
	walks, steps := 20, 150
	if testing.Short() {
		walks = 5
	}
	created, gone := 0, 0
	for seed := range uint64(walks) {
		w := newStepWalk(seed)
		k := newStrictKernel()
		d, err := NewWithRunner(w.cfg, nil, k)
		if err != nil {
			t.Fatal(err)
		}
		d.members = strictMembers{k}
		if err := d.SetPools(w.pools); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var log []string
		for i := range steps {
			what, local, err := w.step(d)
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, i, err)
			}
			log = append(log, what)
			if w.r.IntN(4) == 0 {
				continue // several changes in one Apply
			}
			if local != "" && w.r.IntN(2) == 0 {
				err = d.ProgramEndpoint(ctx, local)
			} else {
				err = d.Apply(ctx)
			}
			if err != nil {
				t.Fatalf("seed %d step %d: %v\nsteps:\n  %s", seed, i, err, strings.Join(log, "\n  "))
			}
			r, err := w.render()
			if err != nil {
				t.Fatal(err)
			}
			if diff := k.differsFrom(r); diff != "" {
				t.Fatalf("seed %d step %d: kernel differs from a fresh render:\n%s\nsteps:\n  %s", seed, i, diff, strings.Join(log, "\n  "))
			}
		}
		created += k.created
		gone += k.gone
	}
	// The walks must have made policies active and inactive, or they
	// prove nothing.
	if created < walks*5 || gone < walks*3 {
		t.Errorf("walks created %d and destroyed %d rule sets: too few transitions", created, gone)
	}
	t.Logf("%d walks of %d steps: %d rule sets created, %d destroyed", walks, steps, created, gone)
}
