package kube

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calyx-net/calyx/datastore"
)

// labelSelector turns a Kubernetes label selector into Calyx selector
// terms (ANDed), each key prefixed with keyPrefix ("" for pod labels,
// datastore.NamespaceLabelPrefix for namespace labels). An empty selector
// gives no terms: it matches everything. The operators map one to one:
// In and NotIn (absent key matches NotIn, as in Kubernetes), Exists,
// DoesNotExist.
func labelSelector(sel *metav1.LabelSelector, keyPrefix string) ([]string, error) {
	if sel == nil {
		return nil, nil
	}
	var terms []string
	for _, k := range datastore.SortedLabelKeys(sel.MatchLabels) {
		terms = append(terms, fmt.Sprintf("%s == %s", keyPrefix+k, quote(sel.MatchLabels[k])))
	}
	for _, e := range sel.MatchExpressions {
		key := keyPrefix + e.Key
		switch e.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(e.Values) == 0 {
				return nil, fmt.Errorf("matchExpressions: %s %s needs values", e.Key, e.Operator)
			}
			op := "in"
			if e.Operator == metav1.LabelSelectorOpNotIn {
				op = "not in"
			}
			vals := slices.Clone(e.Values)
			slices.Sort(vals)
			q := make([]string, len(vals))
			for i, v := range vals {
				q[i] = quote(v)
			}
			terms = append(terms, fmt.Sprintf("%s %s {%s}", key, op, strings.Join(q, ", ")))
		case metav1.LabelSelectorOpExists:
			terms = append(terms, fmt.Sprintf("has(%s)", key))
		case metav1.LabelSelectorOpDoesNotExist:
			terms = append(terms, fmt.Sprintf("!has(%s)", key))
		default:
			return nil, fmt.Errorf("matchExpressions: operator %q is not In, NotIn, Exists or DoesNotExist", e.Operator)
		}
	}
	return terms, nil
}

// quote writes a label value as a selector string. Kubernetes label values
// hold no quotes, so double quotes always do.
func quote(v string) string { return `"` + v + `"` }

// and joins terms; no terms is the empty selector (all()).
func and(terms ...string) string {
	var out []string
	for _, t := range terms {
		if t != "" {
			out = append(out, t)
		}
	}
	return strings.Join(out, " && ")
}

// inNamespace is the term selecting the endpoints of pods of namespace ns.
func inNamespace(ns string) string {
	return fmt.Sprintf("%s == %s", datastore.LabelNamespace, quote(ns))
}

// anyNamespace selects the endpoints of every pod, whatever its namespace.
var anyNamespace = fmt.Sprintf("has(%s)", datastore.LabelNamespace)
