package selector

import (
	"fmt"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	``,
	`all()`,
	`global()`,
	`!all()`,
	`app == "web"`,
	`app != 'web'`,
	`has(tier)`,
	`!has(tier)`,
	`env in {"prod","staging"}`,
	`env not in {"a"}`,
	`env in {}`,
	`key contains "x"`,
	`key starts with "x"`,
	`key ends with "x"`,
	`calyx.dev/namespace == "default" && calyx.dev/pod starts with "web-"`,
	`a == "1" && b == "2" || c == "3"`,
	`(a == "1" || b == "2") && !(c in {"3", "4"})`,
	`!!(a == "1" && (b == "2" && (c == "3")))`,
	`in in {"x"} || has == "y" && not not in {} || has(has)`,
	`app == 'say "hi"' || app == "it's"`,
	`app = web`,
	`app == "unterminated`,
	`((((((((a == "b"))))))))`,
	`all() && x == "y" || !global()`,
	"a ==\t\"b\"\n&&\r\nc != ''",
}

// FuzzParse: Parse never panics; whatever parses has a canonical form that
// re-parses to itself and evaluates like the input, both simplified and as
// written, on label sets built from the selector's own keys and values.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("Parse(%q) error %v is a %T, not a *ParseError", s, err, err)
			}
			return
		}
		again, err := Parse(sel.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("Parse(%q): canonical %q re-parses to %q", s, sel.String(), again.String())
		}
		raw, err := parseTree(s, true)
		if err != nil {
			t.Fatalf("Parse(%q) succeeded but the unsimplified parse failed: %v", s, err)
		}
		for _, labels := range fuzzLabelSets(raw) {
			want := raw.eval(mapLabels(labels))
			if sel.Evaluate(labels) != want || again.Evaluate(labels) != want {
				t.Fatalf("Parse(%q) (canonical %q) on %v: want %v", s, sel.String(), labels, want)
			}
		}
	})
}

// fuzzLabelSets builds label sets that exercise a selector: no labels, every
// key it reads set to each of the values it mentions (and to a value near
// them), and mixes where some keys are absent.
func fuzzLabelSets(root *node) []map[string]string {
	keys := root.collectKeys(nil)
	values := collectValues(root, []string{"", "zz"})
	var sets []map[string]string
	sets = append(sets, nil)
	for i := range len(values) + 3 {
		labels := map[string]string{}
		for j, k := range keys {
			if (i+j)%3 == 2 {
				continue // absent
			}
			v := values[(i+j)%len(values)]
			if i >= len(values) {
				v = fmt.Sprint(v, i) // near a value: a prefix of it matches
			}
			labels[k] = v
		}
		sets = append(sets, labels)
	}
	return sets
}

func collectValues(n *node, values []string) []string {
	values = append(values, n.value)
	values = append(values, n.values...)
	if n.value != "" {
		values = append(values, n.value[:len(n.value)/2], "x"+n.value, strings.ToUpper(n.value))
	}
	for _, k := range n.kids {
		values = collectValues(k, values)
	}
	return values
}
