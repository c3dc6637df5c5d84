// Package deploy holds the shipped manifests and unit files; its tests
// check them. Kubernetes embeds deploy/kubernetes so that the lab runs
// the real components with exactly the RBAC the manifests grant.
package deploy

import "embed"

// Kubernetes is deploy/kubernetes/*.yaml.
//
//go:embed kubernetes/*.yaml
var Kubernetes embed.FS
