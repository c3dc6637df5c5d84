package policy

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Chain is one rendered chain: its rules as iptables-restore "-A" lines and,
// for each, the hash its comment carries. Rendered chains are never modified
// afterwards, so the programmer can keep pointers to them.
type Chain struct {
	Name   string
	Lines  []string
	Hashes []string
}

// commentPrefix starts every comment this package writes: "cx:<hash>".
const commentPrefix = "cx:"

// hashLength is the number of base64 characters of a rule hash (96 bits).
const hashLength = 16

// ruleHash chains the previous rule's hash, the chain name and the rule
// text, so a hash also pins the rule's position: a rule moved, removed or
// inserted by hand changes the sequence read back from the kernel.
func ruleHash(prev, chain, rule string) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{0})
	h.Write([]byte(chain))
	h.Write([]byte{0})
	h.Write([]byte(rule))
	var sum [sha256.Size]byte
	return base64.RawURLEncoding.EncodeToString(h.Sum(sum[:0])[:12])
}

// chainBuilder appends rules to a chain; each gets its comment.
type chainBuilder struct {
	c  Chain
	sb strings.Builder
}

func newChain(name string) *chainBuilder { return &chainBuilder{c: Chain{Name: name}} }

// add appends "-A <chain> <match> -m comment --comment "cx:<hash> <note>" <action>".
// match and note may be empty; note is for humans reading iptables-save and
// must not contain double quotes.
func (b *chainBuilder) add(match, action, note string) {
	sb := &b.sb
	sb.Reset()
	sb.WriteString(match)
	sb.WriteByte('|')
	sb.WriteString(action)
	sb.WriteByte('|')
	sb.WriteString(note)
	prev := ""
	if n := len(b.c.Hashes); n > 0 {
		prev = b.c.Hashes[n-1]
	}
	h := ruleHash(prev, b.c.Name, sb.String())

	sb.Reset()
	sb.Grow(len(b.c.Name) + len(match) + len(action) + len(note) + 48)
	sb.WriteString("-A ")
	sb.WriteString(b.c.Name)
	if match != "" {
		sb.WriteByte(' ')
		sb.WriteString(match)
	}
	sb.WriteString(` -m comment --comment "`)
	sb.WriteString(commentPrefix)
	sb.WriteString(h)
	if note != "" {
		sb.WriteByte(' ')
		sb.WriteString(note)
	}
	sb.WriteString(`" `)
	sb.WriteString(action)
	b.c.Lines = append(b.c.Lines, sb.String())
	b.c.Hashes = append(b.c.Hashes, h)
}

func (b *chainBuilder) done() *Chain {
	c := b.c
	return &c
}

// maxCommentLength is the kernel's limit for the comment match (256 bytes
// with the terminating NUL).
const maxCommentLength = 255

// trimNote makes a note safe inside a quoted comment (names come from
// users) and short enough for the comment match.
func trimNote(note string) string {
	note = safeText(note)
	max := maxCommentLength - len(commentPrefix) - hashLength - 1
	if len(note) > max {
		return note[:max]
	}
	return note
}

// safeText replaces whatever could break out of a quoted iptables-restore
// argument (quotes, backslashes, control and non-ASCII bytes) with '_'.
func safeText(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '\'' {
			if b == nil {
				b = []byte(s)
			}
			b[i] = '_'
		}
	}
	if b == nil {
		return s
	}
	return string(b)
}
