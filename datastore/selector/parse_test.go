package selector

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCanonicalForm(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, `all()`},
		{"  \t\n ", `all()`},
		{`all()`, `all()`},
		{`global()`, `all()`},
		{` all ( ) `, `all()`},
		{`app == "web"`, `app == "web"`},
		{`app=="web"`, `app == "web"`},
		{`app == 'web'`, `app == "web"`},
		{`app != 'web'`, `app != "web"`},
		{`app == 'say "hi"'`, `app == 'say "hi"'`},
		{`app == "it's"`, `app == "it's"`},
		{`app == ""`, `app == ""`},
		{`app == "wéb ✓"`, `app == "wéb ✓"`},
		{`has(tier)`, `has(tier)`},
		{`has( tier )`, `has(tier)`},
		{`!has(tier)`, `!has(tier)`},
		{`! ! has(tier)`, `has(tier)`},
		{`!!!has(tier)`, `!has(tier)`},
		{`calyx.dev/namespace == "default"`, `calyx.dev/namespace == "default"`},
		{`my_key.with-dash == "x"`, `my_key.with-dash == "x"`},
		{`env in {"prod","staging"}`, `env in {"prod", "staging"}`},
		{`env in { 'staging' , "prod", "prod" }`, `env in {"prod", "staging"}`},
		{`env in {}`, `env in {}`},
		{`env not in {"a"}`, `env not in {"a"}`},
		{`env   not   in{"a"}`, `env not in {"a"}`},
		{`key contains "x"`, `key contains "x"`},
		{`key starts with "x"`, `key starts with "x"`},
		{`key ends   with 'x'`, `key ends with "x"`},
		{`!key contains "x"`, `!key contains "x"`},
		{`a == "1" && b == "2" || c == "3"`, `a == "1" && b == "2" || c == "3"`},
		{`a == "1" || b == "2" && c == "3"`, `a == "1" || b == "2" && c == "3"`},
		{`(a == "1" || b == "2") && c == "3"`, `(a == "1" || b == "2") && c == "3"`},
		{`((a == "1"))`, `a == "1"`},
		{`(a == "1" && b == "2") && c == "3"`, `a == "1" && b == "2" && c == "3"`},
		{`a == "1" && (b == "2" && c == "3")`, `a == "1" && b == "2" && c == "3"`},
		{`a == "1" || (b == "2" || c == "3")`, `a == "1" || b == "2" || c == "3"`},
		{`(a == "1" && b == "2") || c == "3"`, `a == "1" && b == "2" || c == "3"`},
		{`!(a == "1" && b == "2")`, `!(a == "1" && b == "2")`},
		{`!(a == "1" || b == "2")`, `!(a == "1" || b == "2")`},
		{`!(a == "1")`, `a != "1"`},
		{`!a == "1"`, `a != "1"`},
		{`!(a != "1")`, `a == "1"`},
		{`!(env in {"a"})`, `env not in {"a"}`},
		{`!(env not in {"a"})`, `env in {"a"}`},
		{`!all()`, `!all()`},
		{`all() && app == "web"`, `app == "web"`},
		{`all() && all()`, `all()`},
		{`has(a) || all()`, `all()`},
		{`!(has(a) || global())`, `!all()`},
		// Keywords are only keywords where the grammar expects them.
		{`in in {"x"}`, `in in {"x"}`},
		{`has == "x"`, `has == "x"`},
		{`all != "x"`, `all != "x"`},
		{`not not in {"x"}`, `not not in {"x"}`},
		{`contains contains "x"`, `contains contains "x"`},
		{`has(has)`, `has(has)`},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := sel.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		again, err := Parse(sel.String())
		if err != nil || again.String() != sel.String() {
			t.Errorf("Parse(%q) does not round-trip: %v, %v", sel.String(), again, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`app = web`, `selector "app = web": at 5: expected ==, !=, in, not in, contains, starts with or ends with`},
		{`app`, `selector "app": at 4: expected ==, !=, in, not in, contains, starts with or ends with`},
		{`app == web`, `selector "app == web": at 8: expected a quoted string`},
		{`app ==`, `selector "app ==": at 7: expected a quoted string`},
		{`app == "web`, `selector "app == \"web": at 8: unterminated string`},
		{`app == 'web"`, `selector "app == 'web\"": at 8: unterminated string`},
		{"app == \"a\tb\"", `selector "app == \"a\tb\"": at 10: control character in string`},
		{"app == \"\xff\"", `selector "app == \"\xff\"": at 8: invalid UTF-8 in string`},
		{`app == "web" app == "x"`, `selector "app == \"web\" app == \"x\"": at 14: expected &&, || or end of selector`},
		{`app == "web" & b == "x"`, `selector "app == \"web\" & b == \"x\"": at 14: expected &&, || or end of selector`},
		{`app == "web" &&`, `selector "app == \"web\" &&": at 16: expected a label key, has(, all(, global(, ! or (`},
		{`&& a == "b"`, `selector "&& a == \"b\"": at 1: expected a label key, has(, all(, global(, ! or (`},
		{`()`, `selector "()": at 2: expected a label key, has(, all(, global(, ! or (`},
		{`(a == "b"`, `selector "(a == \"b\"": at 10: expected &&, || or )`},
		{`a == "b")`, `selector "a == \"b\")": at 9: expected &&, || or end of selector`},
		{`has()`, `selector "has()": at 5: expected a label key`},
		{`has(a`, `selector "has(a": at 6: expected )`},
		{`has("a")`, `selector "has(\"a\")": at 5: expected a label key`},
		{`all(x)`, `selector "all(x)": at 5: expected )`},
		{`foo()`, `selector "foo()": at 4: expected ==, !=, in, not in, contains, starts with or ends with`},
		{`env in "a"`, `selector "env in \"a\"": at 8: expected {`},
		{`env in {"a" "b"}`, `selector "env in {\"a\" \"b\"}": at 13: expected , or }`},
		{`env in {"a",}`, `selector "env in {\"a\",}": at 13: expected a quoted string`},
		{`env in {a}`, `selector "env in {a}": at 9: expected a quoted string`},
		{`env not {"a"}`, `selector "env not {\"a\"}": at 9: expected "in" after "not"`},
		{`env notin {"a"}`, `selector "env notin {\"a\"}": at 5: expected ==, !=, in, not in, contains, starts with or ends with`},
		{`key starts "x"`, `selector "key starts \"x\"": at 12: expected "with" after "starts"`},
		{`key ends "x"`, `selector "key ends \"x\"": at 10: expected "with" after "ends"`},
		{`key contains x`, `selector "key contains x": at 14: expected a quoted string`},
		{`APP == "x" $`, `selector "APP == \"x\" $": at 12: expected &&, || or end of selector`},
		{`!`, `selector "!": at 2: expected a label key, has(, all(, global(, ! or (`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want error %q", tt.in, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("Parse(%q) error\n got %s\nwant %s", tt.in, err, tt.want)
		}
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Selector != tt.in {
			t.Errorf("Parse(%q) error %#v is not a *ParseError for the input", tt.in, err)
		}
	}
}

func TestParseLimits(t *testing.T) {
	long := `a == "` + strings.Repeat("x", MaxLength) + `"`
	_, err := Parse(long)
	want := `selector "a == \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...": 4103 bytes long, more than the limit of 4096`
	if err == nil || err.Error() != want {
		t.Errorf("over-long selector: got %v, want %s", err, want)
	}
	atLimit := `a == "` + strings.Repeat("x", MaxLength-7) + `"`
	if _, err := Parse(atLimit); err != nil {
		t.Errorf("selector of exactly %d bytes: %v", len(atLimit), err)
	}

	nested := func(depth int) string {
		return strings.Repeat("(", depth) + `a == "b"` + strings.Repeat(")", depth)
	}
	if sel, err := Parse(nested(MaxDepth)); err != nil || sel.String() != `a == "b"` {
		t.Errorf("nesting %d: %v, %v", MaxDepth, sel, err)
	}
	_, err = Parse(nested(MaxDepth + 1))
	if want := "at 65: parentheses nested deeper than 64"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("nesting %d: got %v, want %q", MaxDepth+1, err, want)
	}
	// The canonical form never nests deeper than its input, so a selector
	// at the limit still round-trips.
	for _, shape := range []struct{ open, close string }{
		{`!(a == "1" || `, `)`},
		{`(a == "1" || b == "2") && (`, `)`},
		{`a == "1" && (b == "2" || (`, `))`},
		{`((`, `) || b == "2")`},
	} {
		s := strings.Repeat(shape.open, MaxDepth/2) + `c == "3"` + strings.Repeat(shape.close, MaxDepth/2)
		sel, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		if again, err := Parse(sel.String()); err != nil || again.String() != sel.String() {
			t.Errorf("%q does not round-trip: %v", sel.String(), err)
		}
	}
	// Hostile input that stays under the length limit must fail cleanly.
	for _, hostile := range []string{
		strings.Repeat("(", MaxLength),
		strings.Repeat("!", MaxLength-8) + `a == "b"`,
		strings.Repeat("!(", MaxLength/2),
		strings.Repeat(`a == "b" && `, MaxLength/12) + "a",
	} {
		_, _ = Parse(hostile)
	}
	if sel, err := Parse(strings.Repeat("!", MaxLength-8) + `a == "b"`); err != nil || sel.String() != `a == "b"` {
		t.Errorf("a long run of ! : %v, %v", sel, err)
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustParse of a bad selector did not panic")
		}
	}()
	MustParse("app =")
}

func TestUniqueID(t *testing.T) {
	a := MustParse(`app == "web" && env in {"prod","staging"}`)
	b := MustParse(`(app=='web') && env in {'staging', 'prod'}`)
	c := MustParse(`app == "web"`)
	if a.UniqueID() != b.UniqueID() {
		t.Errorf("equal selectors have different ids %s, %s", a.UniqueID(), b.UniqueID())
	}
	if a.UniqueID() == c.UniqueID() {
		t.Errorf("different selectors share id %s", a.UniqueID())
	}
	// The id names kernel objects, so it must never change between releases.
	// Want: lowercase base32 of sha256(`app == "web"`), computed elsewhere.
	if got, want := c.UniqueID(), "s2cpvfnkrg6vgxahllf5"; got != want {
		t.Errorf("UniqueID() = %q, want %q", got, want)
	}
	if len(c.UniqueID()) != UniqueIDLength || strings.Trim(c.UniqueID(), "abcdefghijklmnopqrstuvwxyz234567") != "" {
		t.Errorf("UniqueID() = %q: want %d lowercase base32 characters", c.UniqueID(), UniqueIDLength)
	}
}

func TestLabelKeysAndIsAll(t *testing.T) {
	tests := []struct {
		in    string
		keys  string
		isAll bool
	}{
		{``, ``, true},
		{`global()`, ``, true},
		{`has(b) || all()`, ``, true},
		{`!all()`, ``, false},
		{`b == "1" && (a in {"x"} || !has(c)) && b != "2"`, `a,b,c`, false},
		{`calyx.dev/namespace == "x"`, `calyx.dev/namespace`, false},
	}
	for _, tt := range tests {
		sel := MustParse(tt.in)
		keys := sel.LabelKeys()
		if got := strings.Join(keys, ","); got != tt.keys {
			t.Errorf("%q.LabelKeys() = %q, want %q", tt.in, got, tt.keys)
		}
		if len(keys) > 0 {
			keys[0] = "changed" // the caller owns the slice
			if sel.LabelKeys()[0] == "changed" {
				t.Errorf("%q.LabelKeys() shares its slice", tt.in)
			}
		}
		if sel.IsAll() != tt.isAll {
			t.Errorf("%q.IsAll() = %v, want %v", tt.in, sel.IsAll(), tt.isAll)
		}
	}
}

func TestTextMarshaling(t *testing.T) {
	var sel Selector
	if err := sel.UnmarshalText([]byte(`(app=='web')`)); err != nil {
		t.Fatal(err)
	}
	out, err := sel.MarshalText()
	if err != nil || string(out) != `app == "web"` {
		t.Errorf("MarshalText() = %q, %v", out, err)
	}
	if err := sel.UnmarshalText([]byte(`app =`)); err == nil {
		t.Error("UnmarshalText of a bad selector succeeded")
	}
}
