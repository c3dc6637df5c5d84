package agent

import (
	"fmt"
	"sort"
	"strings"

	"github.com/calyx-net/calyx/datastore"
)

// Bad input fails safe: a resource that cannot be decoded (the syncer
// keeps its last good value) or that the policy dataplane refuses (the
// previous version stays in force) is never taken as a delete. The agent
// reports each one, naming it, in /readyz and calyx_resources_not_in_force
// until it is fixed or deleted.

// Where a resource stands when it is not in force as stored.
const (
	notInForceUndecodable = "undecodable"
	notInForceRefused     = "refused"
)

// refusedName names a resource in the refusals: "Policy/deny-all".
func refusedName(kind datastore.Kind, name string) string { return string(kind) + "/" + name }

// refusePolicyInputLocked records (err non-nil) or clears (nil) the
// policy dataplane's refusal of a resource. Called with a.mu held.
func (a *Agent) refusePolicyInputLocked(kind datastore.Kind, name string, err error) {
	key := refusedName(kind, name)
	if err == nil {
		delete(a.refused, key)
		return
	}
	a.refused[key] = err.Error()
}

// inputProblems lists, sorted, each resource not in force as stored, with
// why; undecodable and refused count them by reason.
func (a *Agent) inputProblems() (lines []string, undecodable, refused int) {
	if a.syncer != nil {
		for key, why := range a.syncer.Undecodable() {
			name := key
			if kind, n, ok := datastore.ParseKey(key); ok {
				name = refusedName(kind, n)
			}
			lines = append(lines, fmt.Sprintf("%s (etcd key %s) cannot be decoded: %s", name, key, why))
			undecodable++
		}
	}
	a.mu.Lock()
	for name, why := range a.refused {
		lines = append(lines, fmt.Sprintf("%s refused: %s", name, why))
		refused++
	}
	a.mu.Unlock()
	sort.Strings(lines)
	return lines, undecodable, refused
}

// inputReadiness is /readyz's "input" condition.
func (a *Agent) inputReadiness() (bool, string) {
	lines, _, _ := a.inputProblems()
	if len(lines) == 0 {
		return true, ""
	}
	return false, fmt.Sprintf("%d resources not in force as stored (the last good version, if any, stays in force until fixed or deleted): %s",
		len(lines), strings.Join(lines, "; "))
}
