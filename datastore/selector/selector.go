package selector

import (
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"strings"
)

// Selector is a parsed label selector. It is immutable and safe for
// concurrent use; build one with Parse or MustParse.
type Selector struct {
	root *node
	text string   // canonical form
	id   string   // hash of text
	keys []string // sorted, unique
}

// UniqueIDLength is the length of UniqueID's result. With the "cx-s-" prefix
// an ipset name stays well under the kernel's 31 characters.
const UniqueIDLength = 20

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Parse parses a selector. The empty string (or only whitespace) selects
// everything, like all(). The error is a *ParseError naming the position and
// what was expected there.
func Parse(s string) (*Selector, error) {
	root, err := parseTree(s, false)
	if err != nil {
		return nil, err
	}
	return newSelector(root), nil
}

// MustParse is Parse for selectors known to be valid (constants, tests); it
// panics on error.
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// All returns the selector that matches everything.
func All() *Selector { return newSelector(allNode) }

func newSelector(root *node) *Selector {
	var b strings.Builder
	root.write(&b)
	text := b.String()
	sum := sha256.Sum256([]byte(text))
	keys := root.collectKeys(nil)
	slices.Sort(keys)
	return &Selector{
		root: root,
		text: text,
		id:   strings.ToLower(idEncoding.EncodeToString(sum[:]))[:UniqueIDLength],
		keys: slices.Compact(keys),
	}
}

// Evaluate reports whether labels match. A nil map is a set of no labels.
// It does not allocate.
func (s *Selector) Evaluate(labels map[string]string) bool {
	return s.root.eval(mapLabels(labels))
}

// Labels are labels in any shape: Get returns a label's value and whether
// it is there. (Policy packs other nodes' endpoints' labels into a string:
// a map of them is most of an agent's memory in a large cluster.)
type Labels interface {
	Get(key string) (string, bool)
}

// EvaluateLabels is Evaluate over labels held in another shape than a map.
func (s *Selector) EvaluateLabels(labels Labels) bool {
	return s.root.eval(labels)
}

type mapLabels map[string]string

func (m mapLabels) Get(key string) (string, bool) {
	v, ok := m[key]
	return v, ok
}

// String returns the canonical form: Parse(s.String()) gives a selector with
// the same String(), and selectors that differ only in whitespace, quote
// style, redundant parentheses, double negation or set order print the same.
func (s *Selector) String() string { return s.text }

// UniqueID is a short stable hash of String() (lowercase base32 of SHA-256,
// UniqueIDLength characters), fit for kernel object names such as ipsets.
func (s *Selector) UniqueID() string { return s.id }

// LabelKeys returns, sorted, the label keys the selector reads: a change to
// any other label cannot change Evaluate's answer. The caller owns the slice.
func (s *Selector) LabelKeys() []string { return slices.Clone(s.keys) }

// IsAll reports whether the selector matches every label set (all(),
// global(), the empty selector, or anything that simplifies to it).
func (s *Selector) IsAll() bool { return s.root.op == opAll }

// MarshalText writes the canonical form, so a Selector can sit in JSON or
// YAML structs as a string.
func (s *Selector) MarshalText() ([]byte, error) { return []byte(s.text), nil }

// UnmarshalText parses text into s. It is for decoding into a fresh value;
// a Selector already shared between goroutines must not be decoded into.
func (s *Selector) UnmarshalText(text []byte) error {
	parsed, err := Parse(string(text))
	if err != nil {
		return err
	}
	*s = *parsed
	return nil
}
