// Package selector parses and evaluates Calico-style label selectors such as
//
//	app == "web" && env in {"prod", "staging"} && !has(quarantine)
//
// Validation uses it to reject bad Policy and nodeSelector fields; the policy
// engine uses it to match endpoints, to skip re-evaluation when only
// unrelated labels change (LabelKeys) and to name ipsets after a selector's
// canonical form (UniqueID). The syntax is documented in docs/selectors.md.
//
// The parser is a small lexer plus recursive descent with limits on input
// length and nesting depth, so untrusted input cannot exhaust memory or the
// stack. A parsed Selector is an immutable, simplified tree: evaluating it
// does not allocate and is safe from many goroutines at once.
package selector
