// Package kube translates the Kubernetes API into the Calyx datastore, the
// way Calico's etcd mode does: calyx-kube-controllers watches the API
// server (one shared informer factory) and writes Policies, Profiles and
// WorkloadEndpoint labels to etcd; agents keep watching etcd only, so the
// API server never sees one watch per node.
//
// Four controllers, each with its own work queue:
//   - policy: every NetworkPolicy becomes one Calyx Policy "knp.<ns>.<name>";
//   - namespaces: every Namespace becomes a Profile "kns.<ns>" whose
//     labelsToApply ("pcns.<key>") the namespace's endpoints inherit, so a
//     namespace label change is one write whatever the number of pods;
//   - pods: pod labels, named ports and service account follow onto the
//     pod's WorkloadEndpoints; endpoints and addresses of pods gone from the
//     API (checked with a live read, never the cache) are released;
//   - nodes: a Node deleted for good loses its Calyx Node, endpoints,
//     addresses, blocks and affinities once its pods are gone.
//
// Everything the controllers create carries the label
// calyx.dev/managed-by=calyx-kube-controllers; they never change or delete
// a Calyx resource without it (WorkloadEndpoints, which agents write, they
// only relabel).
package kube
