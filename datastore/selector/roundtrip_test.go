package selector

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// expr is a test-only selector AST with its own evaluator, independent of the
// package's parser and tree, so that the property test checks the parser
// against a second opinion rather than against itself.
type expr struct {
	op     opKind
	key    string
	value  string
	values []string
	kids   []*expr
}

var (
	genKeys   = []string{"app", "env", "calyx.dev/namespace", "a_b-c.d", "in", "has", "not", "all"}
	genValues = []string{"web", "prod", "", `say "hi"`, "it's", "wéb", "we"}
)

func randomExpr(r *rand.Rand, depth int) *expr {
	leaves := []opKind{opAll, opHas, opEq, opNe, opIn, opNotIn, opContains, opStartsWith, opEndsWith}
	op := leaves[r.IntN(len(leaves))]
	if depth > 0 && r.IntN(3) > 0 {
		op = []opKind{opNot, opAnd, opOr}[r.IntN(3)]
	}
	e := &expr{op: op, key: genKeys[r.IntN(len(genKeys))], value: genValues[r.IntN(len(genValues))]}
	switch op {
	case opIn, opNotIn:
		for range r.IntN(4) {
			e.values = append(e.values, genValues[r.IntN(len(genValues))])
		}
	case opNot:
		e.kids = []*expr{randomExpr(r, depth-1)}
	case opAnd, opOr:
		for range 2 + r.IntN(3) {
			e.kids = append(e.kids, randomExpr(r, depth-1))
		}
	}
	return e
}

func (e *expr) eval(labels map[string]string) bool {
	v, ok := labels[e.key]
	switch e.op {
	case opAll:
		return true
	case opHas:
		return ok
	case opEq:
		return ok && v == e.value
	case opNe:
		return !ok || v != e.value
	case opIn, opNotIn:
		in := false
		for _, w := range e.values {
			in = in || ok && v == w
		}
		return in == (e.op == opIn)
	case opContains:
		return ok && strings.Contains(v, e.value)
	case opStartsWith:
		return ok && strings.HasPrefix(v, e.value)
	case opEndsWith:
		return ok && strings.HasSuffix(v, e.value)
	case opNot:
		return !e.kids[0].eval(labels)
	case opAnd:
		for _, k := range e.kids {
			if !k.eval(labels) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range e.kids {
			if k.eval(labels) {
				return true
			}
		}
		return false
	}
	panic("unknown op")
}

// render writes e in a random but equivalent spelling: whitespace, quote
// style, all() or global(), redundant parentheses.
func (e *expr) render(r *rand.Rand, b *strings.Builder) {
	ws := func(atLeast int) {
		for range atLeast + r.IntN(3) {
			b.WriteByte(" \t\n"[r.IntN(3)])
		}
	}
	quote := func(v string) {
		q := byte('"')
		if strings.Contains(v, `"`) || !strings.Contains(v, `'`) && r.IntN(2) == 0 {
			q = '\''
		}
		b.WriteByte(q)
		b.WriteString(v)
		b.WriteByte(q)
	}
	extra := r.IntN(4) / 3 // one redundant pair of parentheses a quarter of the time
	for range extra {
		b.WriteByte('(')
		ws(0)
	}
	switch e.op {
	case opAll:
		b.WriteString([]string{"all", "global"}[r.IntN(2)])
		ws(0)
		b.WriteString("(")
		ws(0)
		b.WriteString(")")
	case opHas:
		b.WriteString("has(")
		ws(0)
		b.WriteString(e.key)
		ws(0)
		b.WriteString(")")
	case opEq, opNe, opContains, opStartsWith, opEndsWith:
		b.WriteString(e.key)
		word := map[opKind]string{opEq: "==", opNe: "!=", opContains: "contains", opStartsWith: "starts with", opEndsWith: "ends with"}[e.op]
		ws(1)
		b.WriteString(strings.ReplaceAll(word, " ", strings.Repeat(" ", 1+r.IntN(2))))
		ws(0)
		quote(e.value)
	case opIn, opNotIn:
		b.WriteString(e.key)
		ws(1)
		if e.op == opNotIn {
			b.WriteString("not")
			ws(1)
		}
		b.WriteString("in")
		ws(0)
		b.WriteString("{")
		for i, v := range e.values {
			if i > 0 {
				ws(0)
				b.WriteString(",")
			}
			ws(0)
			quote(v)
		}
		ws(0)
		b.WriteString("}")
	case opNot:
		b.WriteString("!")
		ws(0)
		k := e.kids[0]
		e.wrap(r, b, k, k.op == opAnd || k.op == opOr)
	case opAnd, opOr:
		sep := map[opKind]string{opAnd: "&&", opOr: "||"}[e.op]
		for i, k := range e.kids {
			if i > 0 {
				ws(0)
				b.WriteString(sep)
				ws(0)
			}
			e.wrap(r, b, k, e.op == opAnd && k.op == opOr || k.op == e.op)
		}
	}
	for range extra {
		ws(0)
		b.WriteByte(')')
	}
}

// wrap renders a kid, in parentheses when precedence (or keeping a nested
// chain nested, for the flattening to have something to do) asks for them.
func (e *expr) wrap(r *rand.Rand, b *strings.Builder, k *expr, parens bool) {
	if parens {
		b.WriteString("(")
	}
	var sb strings.Builder
	k.render(r, &sb)
	b.WriteString(sb.String())
	if parens {
		b.WriteString(")")
	}
}

func randomLabels(r *rand.Rand) map[string]string {
	labels := map[string]string{}
	for _, k := range genKeys {
		if r.IntN(2) == 0 {
			labels[k] = genValues[r.IntN(len(genValues))]
		}
	}
	return labels
}

// TestRoundTripProperty: two random spellings of one random expression parse
// to the same canonical String(), which re-parses to itself, and every
// parse evaluates as the expression's own evaluator says.
func TestRoundTripProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		e := randomExpr(r, 4)
		var b1, b2 strings.Builder
		e.render(r, &b1)
		e.render(r, &b2)
		s1, err := Parse(b1.String())
		if err != nil {
			t.Fatalf("case %d: Parse(%q): %v", i, b1.String(), err)
		}
		s2, err := Parse(b2.String())
		if err != nil {
			t.Fatalf("case %d: Parse(%q): %v", i, b2.String(), err)
		}
		if s1.String() != s2.String() || s1.UniqueID() != s2.UniqueID() {
			t.Fatalf("case %d: one expression, two canonical forms:\n%q -> %q\n%q -> %q",
				i, b1.String(), s1.String(), b2.String(), s2.String())
		}
		again, err := Parse(s1.String())
		if err != nil || again.String() != s1.String() {
			t.Fatalf("case %d: %q does not round-trip: %v, %v", i, s1.String(), again, err)
		}
		for range 20 {
			labels := randomLabels(r)
			want := e.eval(labels)
			if s1.Evaluate(labels) != want || again.Evaluate(labels) != want {
				t.Fatalf("case %d: %q (canonical %q) on %v: want %v", i, b1.String(), s1.String(), labels, want)
			}
		}
	}
}
