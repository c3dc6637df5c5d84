package selector

import (
	"slices"
	"strings"
)

type opKind uint8

const (
	opAll opKind = iota
	opHas
	opEq
	opNe
	opIn
	opNotIn
	opContains
	opStartsWith
	opEndsWith
	opNot
	opAnd
	opOr
)

// node is one operation of the compiled tree. Leaves test one label; opNot,
// opAnd and opOr combine kids. The tree is never changed after parsing.
type node struct {
	op     opKind
	key    string
	value  string   // for ==, !=, contains, starts with, ends with
	values []string // for in / not in: sorted, without duplicates
	kids   []*node
}

var allNode = &node{op: opAll}

// eval does no allocation: label lookups, string comparisons and a binary
// search over the sorted set.
func (n *node) eval(labels Labels) bool {
	switch n.op {
	case opAll:
		return true
	case opNot:
		return !n.kids[0].eval(labels)
	case opAnd:
		for _, k := range n.kids {
			if !k.eval(labels) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range n.kids {
			if k.eval(labels) {
				return true
			}
		}
		return false
	}
	v, ok := labels.Get(n.key)
	switch n.op {
	case opHas:
		return ok
	case opEq:
		return ok && v == n.value
	case opNe: // Calico: true when the label is absent
		return !ok || v != n.value
	case opIn:
		return ok && inSorted(n.values, v)
	case opNotIn: // true when the label is absent
		return !ok || !inSorted(n.values, v)
	case opContains:
		return ok && strings.Contains(v, n.value)
	case opStartsWith:
		return ok && strings.HasPrefix(v, n.value)
	case opEndsWith:
		return ok && strings.HasSuffix(v, n.value)
	}
	return false
}

func inSorted(values []string, v string) bool {
	_, found := slices.BinarySearch(values, v)
	return found
}

// The constructors below build the simplified tree the canonical form is
// printed from. Every rewrite keeps the meaning (including absent labels), so
// selectors that differ only in spelling end up with the same tree:
//   - !!x is x; !(k == v) is k != v; !(k in S) is k not in S (and back);
//   - nested && (or ||) chains are flattened: redundant parentheses vanish;
//   - all() is dropped from && and absorbs ||;
//   - set members are sorted and deduplicated.

// negated pairs the leaf operators whose negation is another leaf operator.
var negated = map[opKind]opKind{opEq: opNe, opNe: opEq, opIn: opNotIn, opNotIn: opIn}

func newNot(x *node) *node {
	if x.op == opNot {
		return x.kids[0]
	}
	if to, ok := negated[x.op]; ok {
		c := *x
		c.op = to
		return &c
	}
	return &node{op: opNot, kids: []*node{x}}
}

func newAnd(parts []*node) *node {
	var kids []*node
	for _, p := range parts {
		switch p.op {
		case opAll:
		case opAnd:
			kids = append(kids, p.kids...)
		default:
			kids = append(kids, p)
		}
	}
	switch len(kids) {
	case 0:
		return allNode
	case 1:
		return kids[0]
	}
	return &node{op: opAnd, kids: kids}
}

func newOr(parts []*node) *node {
	var kids []*node
	for _, p := range parts {
		switch p.op {
		case opAll:
			return allNode
		case opOr:
			kids = append(kids, p.kids...)
		default:
			kids = append(kids, p)
		}
	}
	if len(kids) == 1 {
		return kids[0]
	}
	return &node{op: opOr, kids: kids}
}

func newSet(op opKind, key string, values []string) *node {
	values = slices.Clone(values)
	slices.Sort(values)
	return &node{op: op, key: key, values: slices.Compact(values)}
}

var infix = map[opKind]string{opEq: " == ", opNe: " != ", opContains: " contains ",
	opStartsWith: " starts with ", opEndsWith: " ends with "}

// write prints the canonical form: single spaces around binary operators,
// double quotes unless the value holds one, parentheses only where the
// precedence (! over && over ||) needs them.
func (n *node) write(b *strings.Builder) {
	switch n.op {
	case opAll:
		b.WriteString("all()")
	case opHas:
		b.WriteString("has(")
		b.WriteString(n.key)
		b.WriteString(")")
	case opEq, opNe, opContains, opStartsWith, opEndsWith:
		b.WriteString(n.key)
		b.WriteString(infix[n.op])
		writeQuoted(b, n.value)
	case opIn, opNotIn:
		b.WriteString(n.key)
		if n.op == opIn {
			b.WriteString(" in {")
		} else {
			b.WriteString(" not in {")
		}
		for i, v := range n.values {
			if i > 0 {
				b.WriteString(", ")
			}
			writeQuoted(b, v)
		}
		b.WriteString("}")
	case opNot:
		b.WriteString("!")
		n.kids[0].writeWrapped(b, n.kids[0].op == opAnd || n.kids[0].op == opOr)
	case opAnd:
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(" && ")
			}
			k.writeWrapped(b, k.op == opOr)
		}
	case opOr:
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(" || ")
			}
			k.write(b)
		}
	}
}

func (n *node) writeWrapped(b *strings.Builder, parens bool) {
	if parens {
		b.WriteString("(")
	}
	n.write(b)
	if parens {
		b.WriteString(")")
	}
}

func writeQuoted(b *strings.Builder, v string) {
	q := `"`
	if strings.Contains(v, `"`) {
		q = "'" // cannot hold both kinds: the lexer has no escapes
	}
	b.WriteString(q)
	b.WriteString(v)
	b.WriteString(q)
}

// collectKeys appends the label keys the tree reads.
func (n *node) collectKeys(keys []string) []string {
	switch n.op {
	case opAll:
	case opNot, opAnd, opOr:
		for _, k := range n.kids {
			keys = k.collectKeys(keys)
		}
	default:
		keys = append(keys, n.key)
	}
	return keys
}
