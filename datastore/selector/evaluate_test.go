package selector

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// labelSets are the label sets of the truth table, named for its columns.
var labelSets = []struct {
	name   string
	labels map[string]string
}{
	{"nil", nil},
	{"empty", map[string]string{}},
	{"web", map[string]string{"app": "web"}},
	{"web-prod", map[string]string{"app": "web", "env": "prod", "tier": ""}},
	{"db-dev", map[string]string{"app": "db", "env": "dev", "calyx.dev/namespace": "kube-system"}},
}

func TestEvaluateTruthTable(t *testing.T) {
	// want holds one character per label set: 1 = match, 0 = no match.
	tests := []struct{ sel, want string }{
		{``, "11111"},
		{`all()`, "11111"},
		{`global()`, "11111"},
		{`!all()`, "00000"},
		{`app == "web"`, "00110"},
		{`app != "web"`, "11001"}, // true when absent
		{`!(app == "web")`, "11001"},
		{`has(app)`, "00111"},
		{`!has(app)`, "11000"},
		{`has(tier)`, "00010"}, // an empty value still counts as present
		{`tier == ""`, "00010"},
		{`tier != ""`, "11101"},
		{`env in {"prod", "staging"}`, "00010"},
		{`env not in {"prod", "staging"}`, "11101"}, // true when absent
		{`env in {}`, "00000"},
		{`env not in {}`, "11111"},
		{`app contains "e"`, "00110"},
		{`app contains ""`, "00111"},
		{`app starts with "w"`, "00110"},
		{`app starts with "d"`, "00001"},
		{`app ends with "b"`, "00111"},
		{`app ends with ""`, "00111"},
		{`app starts with ""`, "00111"},
		{`!app ends with "b"`, "11000"},
		{`calyx.dev/namespace == "kube-system"`, "00001"},
		{`app == "web" && env == "prod"`, "00010"},
		{`app == "web" || env == "dev"`, "00111"},
		{`app == "db" || app == "web" && env == "prod"`, "00011"}, // && binds tighter
		{`(app == "db" || app == "web") && env == "prod"`, "00010"},
		{`!has(env) && has(app)`, "00100"}, // ! binds tighter than &&
		{`!(has(env) && has(app))`, "11100"},
		{`!!has(env)`, "00011"},
		{`app != "web" && app != "db"`, "11000"},
	}
	for _, tt := range tests {
		sel := MustParse(tt.sel)
		raw, err := parseTree(tt.sel, true)
		if err != nil {
			t.Fatal(err)
		}
		var got, gotRaw strings.Builder
		for _, ls := range labelSets {
			got.WriteString(bit(sel.Evaluate(ls.labels)))
			gotRaw.WriteString(bit(raw.eval(mapLabels(ls.labels))))
		}
		if got.String() != tt.want {
			t.Errorf("%q on %s: got %s, want %s", tt.sel, setNames(), got.String(), tt.want)
		}
		if gotRaw.String() != tt.want {
			t.Errorf("%q unsimplified on %s: got %s, want %s", tt.sel, setNames(), gotRaw.String(), tt.want)
		}
	}
}

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func setNames() string {
	var names []string
	for _, ls := range labelSets {
		names = append(names, ls.name)
	}
	return strings.Join(names, ",")
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	sel := MustParse(`app == "web" && env in {"a", "b", "prod", "z"} && !has(quarantine) && ` +
		`(tier starts with "front" || tier ends with "end" || tier contains "x") && zone != "bad"`)
	labels := map[string]string{"app": "web", "env": "prod", "tier": "backend"}
	if !sel.Evaluate(labels) {
		t.Fatal("selector should match")
	}
	if n := testing.AllocsPerRun(1000, func() { sel.Evaluate(labels) }); n != 0 {
		t.Errorf("Evaluate allocates %.1f times per call", n)
	}
}

func TestEvaluateConcurrently(t *testing.T) {
	sel := MustParse(`app == "web" || env in {"prod"}`)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				labels := map[string]string{"app": fmt.Sprint(g, i)}
				if sel.Evaluate(labels) {
					t.Errorf("unexpected match on %v", labels)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkEvaluate(b *testing.B) {
	sel := MustParse(`app == "web" && env in {"a", "b", "prod", "z"} && !has(quarantine) && ` +
		`(tier starts with "front" || tier ends with "end") && calyx.dev/namespace != "kube-system"`)
	labels := map[string]string{"app": "web", "env": "prod", "tier": "backend", "calyx.dev/namespace": "default",
		"calyx.dev/node": "n1", "calyx.dev/pod": "web-1"}
	b.ReportAllocs()
	for b.Loop() {
		if !sel.Evaluate(labels) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkParse(b *testing.B) {
	const s = `app == "web" && env in {"a", "b", "prod", "z"} && !has(quarantine) && ` +
		`(tier starts with "front" || tier ends with "end") && calyx.dev/namespace != "kube-system"`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(s); err != nil {
			b.Fatal(err)
		}
	}
}
