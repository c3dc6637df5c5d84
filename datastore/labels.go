package datastore

import "strings"

// ReservedLabelPrefix marks the labels Calyx sets itself (node, namespace,
// pod, service account, orchestrator): policy selectors trust them, so no
// runtime, CNI argument or pod may set them.
const ReservedLabelPrefix = "calyx.dev/"

// IsReservedLabel reports whether key is one only Calyx may set: its
// prefix is calyx.dev or a subdomain of it, or it is a namespace label
// (pcns.) that profiles carry.
func IsReservedLabel(key string) bool {
	prefix, _, hasPrefix := strings.Cut(key, "/")
	return strings.HasPrefix(key, NamespaceLabelPrefix) ||
		(hasPrefix && (prefix == "calyx.dev" || strings.HasSuffix(prefix, ".calyx.dev")))
}

// maxLabelValue is the longest label value (Kubernetes' limit).
const maxLabelValue = 63

// LabelValue is s when it is a valid label value; otherwise a valid value
// derived from it: its first characters that fit, "_", and a hash of the
// whole of s. A pod name longer than 63 characters thus still gets a
// label (distinct for distinct names) instead of none, which would make a
// selector on it silently miss the pod. Kubernetes names never contain
// "_", so no other pod's name can equal a derived value.
func LabelValue(s string) string {
	if len(s) <= maxLabelValue && labelValue.MatchString(s) {
		return s
	}
	h := shortHash(s)
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxLabelValue-len(h)-1 {
			break
		}
		if r < 0x80 && (r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	prefix := strings.TrimLeft(strings.TrimRight(b.String(), "-_."), "-_.")
	if prefix == "" {
		prefix = "x"
	}
	return prefix + "_" + h
}
