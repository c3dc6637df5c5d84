package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/calyx-net/calyx/datastore"
)

// ManagedBy is the value of datastore.LabelManagedBy on what the
// controllers write.
const ManagedBy = "calyx-kube-controllers"

// Orchestrator is the calyx.dev/orchestrator label of Kubernetes pods'
// endpoints (and of nodes whose agent runs with a kubeconfig).
const Orchestrator = "k8s"

const (
	policyPrefix  = "knp."
	profilePrefix = "kns."
	// PolicyOrder places translated policies after the Calyx policies
	// users give a lower order (Calico uses the same).
	PolicyOrder = 1000.0
)

// maxName is the longest Policy or Profile name (a DNS-1123 subdomain).
const maxName = 253

// PolicyName is the Calyx Policy of NetworkPolicy ns/name: "knp.<ns>.<name>",
// or, past 253 characters, a head and a hash of the whole.
func PolicyName(ns, name string) string {
	full := policyPrefix + ns + "." + name
	if len(full) <= maxName {
		return full
	}
	sum := sha256.Sum256([]byte(ns + "/" + name))
	h := hex.EncodeToString(sum[:])[:16]
	return strings.TrimRight(full[:maxName-len(h)-1], ".-") + "-" + h
}

// ProfileName is the Profile of namespace ns: "kns.<ns>".
func ProfileName(ns string) string { return profilePrefix + ns }

// namespaceOfProfile is the inverse of ProfileName.
func namespaceOfProfile(name string) (string, bool) {
	return strings.CutPrefix(name, profilePrefix)
}

// owned reports whether the controllers wrote the resource.
func owned(r datastore.Resource) bool {
	return r.GetMeta().Labels[datastore.LabelManagedBy] == ManagedBy
}

func ownedLabels() map[string]string {
	return map[string]string{datastore.LabelManagedBy: ManagedBy}
}
