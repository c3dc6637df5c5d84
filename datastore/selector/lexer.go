package selector

import (
	"strings"
	"unicode/utf8"
)

type tokenKind uint8

const (
	tokEOF     tokenKind = iota
	tokIdent             // a label key or a keyword; the parser decides by position
	tokString            // a quoted literal; text holds the value without quotes
	tokEq                // ==
	tokNe                // !=
	tokNot               // !
	tokAnd               // &&
	tokOr                // ||
	tokLParen            // (
	tokRParen            // )
	tokLBrace            // {
	tokRBrace            // }
	tokComma             // ,
	tokInvalid           // a byte no token starts with, or a malformed string (problem says why)
)

type token struct {
	kind    tokenKind
	pos     int // 0-based byte offset in the selector
	text    string
	problem string // set for malformed strings: reported instead of "expected ..."
}

// lexer hands out tokens one at a time so that the parser reports the first
// problem from the left, whether it is a lexical or a grammatical one.
type lexer struct {
	src string
	pos int
}

// isKeyByte reports whether c may appear in a label key. Keys are lenient as
// in Calico: a DNS prefix with a slash, dots, dashes and underscores.
func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (l *lexer) next() token {
	for l.pos < len(l.src) && isSpace(l.src[l.pos]) {
		l.pos++
	}
	start := l.pos
	if start >= len(l.src) {
		return token{kind: tokEOF, pos: start}
	}
	c := l.src[start]
	switch {
	case isKeyByte(c):
		for l.pos < len(l.src) && isKeyByte(l.src[l.pos]) {
			l.pos++
		}
		return token{kind: tokIdent, pos: start, text: l.src[start:l.pos]}
	case c == '"' || c == '\'':
		return l.quoted(c)
	}
	if start+1 < len(l.src) {
		kind := tokInvalid
		switch l.src[start : start+2] {
		case "==":
			kind = tokEq
		case "!=":
			kind = tokNe
		case "&&":
			kind = tokAnd
		case "||":
			kind = tokOr
		}
		if kind != tokInvalid {
			l.pos += 2
			return token{kind: kind, pos: start}
		}
	}
	kind := tokInvalid
	switch c {
	case '!':
		kind = tokNot
	case '(':
		kind = tokLParen
	case ')':
		kind = tokRParen
	case '{':
		kind = tokLBrace
	case '}':
		kind = tokRBrace
	case ',':
		kind = tokComma
	}
	l.pos++
	return token{kind: kind, pos: start}
}

// quoted scans a string literal. There are no escapes (as in Calico): a value
// holding a double quote is written in single quotes and vice versa.
func (l *lexer) quoted(q byte) token {
	start := l.pos
	end := strings.IndexByte(l.src[start+1:], q)
	if end < 0 {
		l.pos = len(l.src)
		return token{kind: tokInvalid, pos: start, problem: "unterminated string"}
	}
	value := l.src[start+1 : start+1+end]
	l.pos = start + end + 2
	for i := 0; i < len(value); i++ {
		if value[i] < 0x20 || value[i] == 0x7f {
			return token{kind: tokInvalid, pos: start + 1 + i, problem: "control character in string"}
		}
	}
	if !utf8.ValidString(value) {
		return token{kind: tokInvalid, pos: start, problem: "invalid UTF-8 in string"}
	}
	return token{kind: tokString, pos: start, text: value}
}
