package selector

import "fmt"

const (
	// MaxLength is the longest selector Parse accepts, in bytes.
	MaxLength = 4096
	// MaxDepth is the deepest nesting of parentheses Parse accepts; it
	// bounds the parser's recursion (and the tree's depth) on hostile input.
	MaxDepth = 64
)

// ParseError says where a selector is wrong and what was expected there.
type ParseError struct {
	Selector string
	Pos      int // 1-based byte offset; 0 when the error is about the whole selector
	Msg      string
}

func (e *ParseError) Error() string {
	if e.Pos == 0 {
		s := e.Selector
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		return fmt.Sprintf("selector %q: %s", s, e.Msg)
	}
	return fmt.Sprintf("selector %q: at %d: %s", e.Selector, e.Pos, e.Msg)
}

const (
	expectOperator = "expected ==, !=, in, not in, contains, starts with or ends with"
	expectTerm     = "expected a label key, has(, all(, global(, ! or ("
	expectEnd      = "expected &&, || or end of selector"
	expectClose    = "expected &&, || or )"
	expectString   = "expected a quoted string"
)

// parser is recursive descent over this grammar:
//
//	selector := <empty> | or
//	or       := and { "||" and }
//	and      := unary { "&&" unary }
//	unary    := { "!" } primary
//	primary  := "(" or ")" | "all" "(" ")" | "global" "(" ")" | "has" "(" key ")"
//	          | key ( "==" str | "!=" str | "in" set | "not" "in" set
//	                | "contains" str | "starts" "with" str | "ends" "with" str )
//	set      := "{" [ str { "," str } ] "}"
//
// Keywords are only keywords where the grammar expects them, so a label may
// be called "in" or "has".
type parser struct {
	lex   lexer
	tok   token
	depth int
	raw   bool // build the tree as written, without simplifying (tests compare both)
}

type posError struct {
	pos int // 0-based
	msg string
}

func (e *posError) Error() string { return e.msg }

func parseTree(src string, raw bool) (*node, error) {
	if len(src) > MaxLength {
		return nil, &ParseError{Selector: src, Msg: fmt.Sprintf("%d bytes long, more than the limit of %d", len(src), MaxLength)}
	}
	p := &parser{lex: lexer{src: src}, raw: raw}
	p.advance()
	n, err := p.selector()
	if err != nil {
		pe := err.(*posError)
		return nil, &ParseError{Selector: src, Pos: pe.pos + 1, Msg: pe.msg}
	}
	return n, nil
}

func (p *parser) advance() { p.tok = p.lex.next() }

// fail reports what was expected at the current token, unless the lexer
// already knows better (an unterminated string, say).
func (p *parser) fail(expected string) error {
	if p.tok.problem != "" {
		return &posError{p.tok.pos, p.tok.problem}
	}
	return &posError{p.tok.pos, expected}
}

func (p *parser) selector() (*node, error) {
	if p.tok.kind == tokEOF {
		return allNode, nil
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		return nil, p.fail(expectEnd)
	}
	return n, nil
}

func (p *parser) or() (*node, error) {
	return p.chain(tokOr, p.and, p.newOr)
}

func (p *parser) and() (*node, error) {
	return p.chain(tokAnd, p.unary, p.newAnd)
}

// chain parses operand { sep operand } into one n-ary node.
func (p *parser) chain(sep tokenKind, operand func() (*node, error), combine func([]*node) *node) (*node, error) {
	first, err := operand()
	if err != nil || p.tok.kind != sep {
		return first, err
	}
	parts := []*node{first}
	for p.tok.kind == sep {
		p.advance()
		n, err := operand()
		if err != nil {
			return nil, err
		}
		parts = append(parts, n)
	}
	return combine(parts), nil
}

// unary loops over "!" rather than recursing, so a long run of them costs
// no stack.
func (p *parser) unary() (*node, error) {
	nots := 0
	for p.tok.kind == tokNot {
		nots++
		p.advance()
	}
	n, err := p.primary()
	if err != nil {
		return nil, err
	}
	if p.raw {
		for ; nots > 0; nots-- {
			n = &node{op: opNot, kids: []*node{n}}
		}
		return n, nil
	}
	if nots%2 == 1 {
		n = newNot(n)
	}
	return n, nil
}

func (p *parser) primary() (*node, error) {
	switch p.tok.kind {
	case tokLParen:
		if p.depth >= MaxDepth {
			return nil, &posError{p.tok.pos, fmt.Sprintf("parentheses nested deeper than %d", MaxDepth)}
		}
		p.depth++
		p.advance()
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tokRParen {
			return nil, p.fail(expectClose)
		}
		p.depth--
		p.advance()
		return n, nil
	case tokIdent:
		name := p.tok.text
		p.advance()
		if p.tok.kind == tokLParen {
			switch name {
			case "all", "global": // global() is Calico's all() for global resources
				p.advance()
				if err := p.expect(tokRParen, "expected )"); err != nil {
					return nil, err
				}
				return allNode, nil
			case "has":
				p.advance()
				if p.tok.kind != tokIdent {
					return nil, p.fail("expected a label key")
				}
				key := p.tok.text
				p.advance()
				if err := p.expect(tokRParen, "expected )"); err != nil {
					return nil, err
				}
				return &node{op: opHas, key: key}, nil
			}
		}
		return p.comparison(name)
	}
	return nil, p.fail(expectTerm)
}

func (p *parser) comparison(key string) (*node, error) {
	var op opKind
	switch p.tok.kind {
	case tokEq:
		op = opEq
	case tokNe:
		op = opNe
	case tokIdent:
		switch p.tok.text {
		case "in":
			p.advance()
			return p.set(opIn, key)
		case "not":
			p.advance()
			if p.tok.kind != tokIdent || p.tok.text != "in" {
				return nil, p.fail(`expected "in" after "not"`)
			}
			p.advance()
			return p.set(opNotIn, key)
		case "contains":
			op = opContains
		case "starts", "ends":
			word := p.tok.text
			p.advance()
			if p.tok.kind != tokIdent || p.tok.text != "with" {
				return nil, p.fail(fmt.Sprintf("expected %q after %q", "with", word))
			}
			op = opStartsWith
			if word == "ends" {
				op = opEndsWith
			}
		default:
			return nil, p.fail(expectOperator)
		}
	default:
		return nil, p.fail(expectOperator)
	}
	p.advance()
	if p.tok.kind != tokString {
		return nil, p.fail(expectString)
	}
	n := &node{op: op, key: key, value: p.tok.text}
	p.advance()
	return n, nil
}

func (p *parser) set(op opKind, key string) (*node, error) {
	if err := p.expect(tokLBrace, "expected {"); err != nil {
		return nil, err
	}
	var values []string
	if p.tok.kind == tokRBrace {
		p.advance()
		return newSet(op, key, values), nil
	}
	for {
		if p.tok.kind != tokString {
			return nil, p.fail(expectString)
		}
		values = append(values, p.tok.text)
		p.advance()
		switch p.tok.kind {
		case tokComma:
			p.advance()
		case tokRBrace:
			p.advance()
			return newSet(op, key, values), nil
		default:
			return nil, p.fail("expected , or }")
		}
	}
}

func (p *parser) expect(kind tokenKind, expected string) error {
	if p.tok.kind != kind {
		return p.fail(expected)
	}
	p.advance()
	return nil
}

// The raw variants keep the tree as written; the parser's own outputs are
// compared against them in tests to prove the simplifications sound.

func (p *parser) newAnd(parts []*node) *node {
	if p.raw {
		return &node{op: opAnd, kids: parts}
	}
	return newAnd(parts)
}

func (p *parser) newOr(parts []*node) *node {
	if p.raw {
		return &node{op: opOr, kids: parts}
	}
	return newOr(parts)
}
