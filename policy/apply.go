package policy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// haveState is what the kernel holds, as last read or written.
type haveState struct {
	tables map[Family]map[Table]*haveTable
	sets   map[string]*haveSet
}

type haveTable struct {
	chains map[string]*haveChain
	hooks  map[hook]int
	stale  []string
}

type haveChain struct {
	written *Chain // the rendered chain last written, when we wrote it
	hashes  []string
}

type haveSet struct {
	typ     string
	family  Family
	members map[SetMember]struct{}
	gen     uint64 // generation of the desired set last written; 0 when read
}

func (h *haveChain) equals(c *Chain) bool {
	return h.written == c || slices.Equal(h.hashes, c.Hashes)
}

// tableBatch is what one table's section of an iptables-restore changes.
type tableBatch struct {
	table    Table
	write    []*Chain
	del      []string
	addHooks []hook
}

// familyBatch is one iptables-restore call: a section per changed table,
// each committed atomically on its own.
type familyBatch struct {
	family Family
	text   string
	tables []tableBatch
}

// setOp is what one Apply changes in one set.
type setOp struct {
	set        *IPSet
	create     bool // new set: create it, then add every member
	swap       bool // mostly new content: fill a temporary set and swap it in
	adds, dels []SetMember
}

// plan is everything one Apply writes, in order.
type plan struct {
	setOps      []setOp
	setText     string // the same as ipset restore input: create/add/del/swap
	members     int
	batches     []familyBatch
	destroyText string // sets no longer wanted, after no rule uses them
	destroyed   []string
}

func (p *plan) empty() bool {
	return p.setText == "" && len(p.batches) == 0 && p.destroyText == ""
}

// membersOnly reports whether the sets change only by members of sets
// that exist: what netlink can write without a process.
func (p *plan) membersOnly() bool {
	for _, op := range p.setOps {
		if op.create || op.swap {
			return false
		}
	}
	return true
}

// Apply writes what changed since the last Apply: set members in one ipset
// batch, then each changed table in one iptables-restore, then destroys the
// sets nothing uses any more. On the first call (and after a failure) it
// first reads the kernel, so it writes only what differs from what is
// there.
func (d *Dataplane) Apply(ctx context.Context) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	start, applies := time.Now(), d.stats.Applies
	err := d.apply(ctx)
	d.record(err)
	if d.have != nil {
		d.stats.Sets, d.stats.SetMembers = len(d.have.sets), 0
		for _, s := range d.have.sets {
			d.stats.SetMembers += len(s.members)
		}
	}
	if d.cfg.OnApply != nil && (d.stats.Applies != applies || err != nil) {
		d.cfg.OnApply(time.Since(start), err)
	}
	return err
}

func (d *Dataplane) apply(ctx context.Context) error {
	start := time.Now()
	if d.have == nil {
		have, err := d.readKernel(ctx)
		if err != nil {
			return fmt.Errorf("reading the kernel's policy state: %w", err)
		}
		d.have = have
	}
	d.mu.Lock()
	d.m.refresh()
	p := d.plan()
	d.mu.Unlock()
	if p.empty() {
		return nil
	}

	if p.setText != "" {
		if err := d.writeSets(ctx, p); err != nil {
			d.have = nil
			return fmt.Errorf("writing ipsets: %w", err)
		}
		for _, op := range p.setOps {
			s := op.set
			d.have.sets[s.Name] = &haveSet{typ: s.Type, family: s.Family, members: s.Members, gen: s.gen}
		}
	}
	for _, fb := range p.batches {
		if fb.text != "" {
			if err := d.restore(ctx, fb.family, fb.text); err != nil {
				// Tables before the failing one may have committed: read
				// the kernel again rather than guess.
				d.have = nil
				return fmt.Errorf("writing IPv%d tables: %w", fb.family, err)
			}
		}
		if err := d.insertHooks(ctx, fb); err != nil {
			d.have = nil
			return fmt.Errorf("inserting IPv%d hooks: %w", fb.family, err)
		}
		for _, b := range fb.tables {
			ht := d.have.tables[fb.family][b.table]
			for _, c := range b.write {
				ht.chains[c.Name] = &haveChain{written: c, hashes: c.Hashes}
			}
			for _, name := range b.del {
				delete(ht.chains, name)
			}
			for _, h := range b.addHooks {
				ht.hooks[h] = 1
			}
			ht.stale = nil
			d.stats.ChainsWritten += len(b.write)
			d.stats.ChainsDeleted += len(b.del)
		}
	}
	if p.destroyText != "" {
		if err := d.k.ipsetRestore(ctx, p.destroyText); err != nil {
			d.have = nil
			return fmt.Errorf("destroying unused ipsets: %w", err)
		}
		for _, name := range p.destroyed {
			delete(d.have.sets, name)
		}
	}
	d.stats.Applies++
	d.stats.SetsWritten += len(p.setOps)
	d.stats.MembersChanged += p.members
	d.stats.LastApply = time.Since(start)
	d.log.Debug("policy applied", "sets", len(p.setOps), "members", p.members,
		"restores", len(p.batches), "took", d.stats.LastApply)
	return nil
}

// restore runs one iptables-restore and counts it. Called with applyMu
// held.
func (d *Dataplane) restore(ctx context.Context, f Family, text string) error {
	err := d.k.iptablesRestore(ctx, f, text)
	c := &d.stats.RestoresV4
	if f == V6 {
		c = &d.stats.RestoresV6
	}
	if err != nil {
		c.Failed++
	} else {
		c.OK++
	}
	return err
}

// plan compares the desired state with d.have. Called with d.mu held.
func (d *Dataplane) plan() *plan {
	p := &plan{}
	for _, name := range slices.Sorted(maps.Keys(d.m.want.sets)) {
		want := d.m.want.sets[name]
		have := d.have.sets[name]
		op := setOp{set: want}
		switch {
		case have == nil:
			op.create, op.adds = true, sortedMembers(want.Members)
		case have.gen != 0 && have.gen == want.gen:
			continue
		case have.typ != want.Type || have.family != want.Family:
			// Cannot be swapped with a set of another type; leave it and
			// say so (something other than us made it).
			d.log.Error("ipset has the wrong type; destroy it by hand", "set", name, "type", have.typ, "family", have.family)
			continue
		default:
			op.adds, op.dels = diffMembers(want.Members, have.members)
			if len(op.adds)+len(op.dels) == 0 {
				have.gen = want.gen
				continue
			}
			// Mostly new content: fill a fresh set and swap it in
			// atomically instead of many add/del.
			op.swap = len(op.adds)+len(op.dels) > len(want.Members) && len(want.Members) > 64
		}
		p.members += len(op.adds) + len(op.dels)
		p.setOps = append(p.setOps, op)
	}
	var sb strings.Builder
	for _, op := range p.setOps {
		d.writeSetOp(&sb, op)
	}
	p.setText = sb.String()

	for _, f := range d.m.families {
		fb := familyBatch{family: f}
		sb.Reset()
		for _, t := range tables {
			if b, ok := d.planTable(&sb, f, t); ok {
				fb.tables = append(fb.tables, b)
			}
		}
		if len(fb.tables) > 0 {
			fb.text = sb.String()
			p.batches = append(p.batches, fb)
		}
	}

	sb.Reset()
	for _, name := range slices.Sorted(maps.Keys(d.have.sets)) {
		if _, ok := d.m.want.sets[name]; !ok {
			sb.WriteString("destroy " + name + "\n")
			p.destroyed = append(p.destroyed, name)
		}
	}
	p.destroyText = sb.String()
	return p
}

// planTable appends one table's section to sb when the table changes.
func (d *Dataplane) planTable(sb *strings.Builder, f Family, t Table) (tableBatch, bool) {
	b := tableBatch{table: t}
	want := d.m.want.chains[f][t]
	ht := d.have.tables[f][t]
	for _, c := range sortedChains(want) {
		if h := ht.chains[c.Name]; h == nil || !h.equals(c) {
			b.write = append(b.write, c)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ht.chains)) {
		if _, ok := want[name]; !ok {
			b.del = append(b.del, name)
		}
	}
	for _, h := range hooks {
		if h.table == t && ht.hooks[h] == 0 {
			b.addHooks = append(b.addHooks, h)
		}
	}
	if len(b.write)+len(b.del)+len(b.addHooks)+len(ht.stale) == 0 {
		return b, false
	}
	restoreHooks := b.addHooks
	if d.hooks != nil {
		restoreHooks = nil // inserted after the restore (insertHooks)
	}
	if len(b.write)+len(b.del)+len(restoreHooks)+len(ht.stale) > 0 {
		writeTableBatch(sb, t, b.write, b.del, restoreHooks, ht.stale...)
	}
	return b, true
}

// insertHooks inserts the missing hooks of a family batch with go-iptables,
// once the restore has made the chains they jump to.
func (d *Dataplane) insertHooks(ctx context.Context, fb familyBatch) error {
	if d.hooks == nil {
		return nil
	}
	var hs []hook
	for _, b := range fb.tables {
		hs = append(hs, b.addHooks...)
	}
	if len(hs) == 0 {
		return nil
	}
	return d.hooks.insert(ctx, fb.family, hs)
}

// writeSetOp writes one set's change as ipset restore input.
func (d *Dataplane) writeSetOp(sb *strings.Builder, op setOp) {
	s := op.set
	switch {
	case op.create:
		writeCreate(sb, s.Name, s.Type, s.Family)
		for _, m := range op.adds {
			writeMember(sb, "add", s.Name, m)
		}
	case op.swap:
		d.tmpSeq++
		tmp := "cx-tmp-" + strconv.Itoa(d.tmpSeq)
		writeCreate(sb, tmp, s.Type, s.Family)
		sb.WriteString("flush " + tmp + "\n")
		for _, m := range sortedMembers(s.Members) {
			writeMember(sb, "add", tmp, m)
		}
		sb.WriteString("swap " + tmp + " " + s.Name + "\n")
		sb.WriteString("destroy " + tmp + "\n")
	default:
		for _, m := range op.adds {
			writeMember(sb, "add", s.Name, m)
		}
		for _, m := range op.dels {
			writeMember(sb, "del", s.Name, m)
		}
	}
}

// writeSets writes the planned set changes: over netlink when they are
// member changes only (no process: this is the path of a new open
// endpoint), else, or when netlink fails, with one ipset restore.
func (d *Dataplane) writeSets(ctx context.Context, p *plan) error {
	if d.members != nil && p.membersOnly() {
		err := d.members.writeMembers(ctx, p.setOps)
		if err == nil {
			d.stats.NetlinkWrites++
			return nil
		}
		d.log.Warn("writing set members over netlink failed; using ipset restore", "err", err)
	}
	return d.k.ipsetRestore(ctx, p.setText)
}

// diffMembers lists what to add to have and remove from it to get want.
func diffMembers(want, have map[SetMember]struct{}) (adds, dels []SetMember) {
	for m := range want {
		if _, ok := have[m]; !ok {
			adds = append(adds, m)
		}
	}
	for m := range have {
		if _, ok := want[m]; !ok {
			dels = append(dels, m)
		}
	}
	slices.SortFunc(adds, compareMember)
	slices.SortFunc(dels, compareMember)
	return adds, dels
}

// readKernel reads our chains, hooks and sets back from the kernel.
func (d *Dataplane) readKernel(ctx context.Context) (*haveState, error) {
	have := &haveState{tables: map[Family]map[Table]*haveTable{}}
	for _, f := range d.m.families {
		have.tables[f] = map[Table]*haveTable{}
		out, err := d.k.iptablesSave(ctx, f)
		if err != nil {
			return nil, err
		}
		kts := parseIptablesSave(out)
		for _, t := range tables {
			kt := kts[t]
			ht := &haveTable{chains: map[string]*haveChain{}, hooks: kt.hooks, stale: kt.stale}
			for name, hashes := range kt.chains {
				ht.chains[name] = &haveChain{hashes: hashes}
			}
			have.tables[f][t] = ht
		}
	}
	out, err := d.k.ipsetSave(ctx)
	if err != nil {
		return nil, err
	}
	ks, err := parseIpsetSave(out)
	if err != nil {
		return nil, err
	}
	have.sets = map[string]*haveSet{}
	for name, s := range ks {
		if !slices.Contains(d.m.families, s.family) {
			continue // a family we do not program (IPv6 off): not ours to judge
		}
		have.sets[name] = &haveSet{typ: s.typ, family: s.family, members: s.members}
	}
	d.stats.KernelReads++
	return have, nil
}

// Resync re-reads the kernel; the next Apply rewrites whatever differs from
// the desired state (a chain flushed or edited by hand, a set member
// removed, a hook deleted).
func (d *Dataplane) Resync(ctx context.Context) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	have, err := d.readKernel(ctx)
	if err != nil {
		d.have = nil
		return fmt.Errorf("policy resync: %w", err)
	}
	d.have = have
	return nil
}

// RemoveAll deletes every cx- chain, hook and set this Dataplane's families
// have in the kernel, whatever the desired state (uninstall, tests). The
// next Apply writes everything again.
func (d *Dataplane) RemoveAll(ctx context.Context) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	have, err := d.readKernel(ctx)
	d.have = nil
	if err != nil {
		return fmt.Errorf("policy remove: %w", err)
	}
	for _, f := range d.m.families {
		var sb strings.Builder
		for _, t := range tables {
			ht := have.tables[f][t]
			stale := ht.stale
			for h, n := range ht.hooks {
				for range n {
					stale = append(stale, "-D "+h.builtin+" "+hookLine(h))
				}
			}
			del := slices.Sorted(maps.Keys(ht.chains))
			if len(del)+len(stale) > 0 {
				writeTableBatch(&sb, t, nil, del, nil, stale...)
			}
		}
		if sb.Len() == 0 {
			continue
		}
		if err := d.restore(ctx, f, sb.String()); err != nil {
			return fmt.Errorf("policy remove: IPv%d tables: %w", f, err)
		}
	}
	var sb strings.Builder
	for name := range have.sets {
		sb.WriteString("destroy " + name + "\n")
	}
	if sb.Len() > 0 {
		if err := d.k.ipsetRestore(ctx, sb.String()); err != nil {
			return fmt.Errorf("policy remove: ipsets: %w", err)
		}
	}
	return nil
}
