package kube

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/calyx-net/calyx/datastore"
)

// PodEndpoint is what a pod gives its WorkloadEndpoints: labels, the
// profile of its namespace, its named ports.
type PodEndpoint struct {
	Labels   map[string]string
	Profiles []string
	Ports    []datastore.EndpointPort
}

// reservedLabel reports whether a pod label would pose as one Calyx sets
// itself (calyx.dev/..., or a namespace label): such pod labels are
// dropped, so a pod cannot claim another namespace or service account.
func reservedLabel(key string) bool {
	return datastore.IsReservedLabel(key)
}

// EndpointOf is the endpoint side of a pod: its labels (without reserved
// ones) plus calyx.dev/namespace, /pod, /serviceaccount and
// /orchestrator=k8s; the Profile of its namespace; its containers' named
// ports. The agent adds calyx.dev/node.
func EndpointOf(pod *corev1.Pod) PodEndpoint {
	labels := map[string]string{}
	for k, v := range pod.Labels {
		if !reservedLabel(k) && datastore.ValidateLabel(k, v) == nil {
			labels[k] = v
		}
	}
	labels[datastore.LabelNamespace] = pod.Namespace
	labels[datastore.LabelOrchestrator] = Orchestrator
	labels[datastore.LabelPod] = datastore.LabelValue(pod.Name) // hashed past 63 characters
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if datastore.ValidateLabel(datastore.LabelServiceAccount, sa) == nil {
		labels[datastore.LabelServiceAccount] = sa
	}
	return PodEndpoint{Labels: labels, Profiles: []string{ProfileName(pod.Namespace)}, Ports: namedPorts(pod)}
}

// namedPorts lists the pod's named container ports (init containers'
// included: sidecars serve too), the first of each name and protocol.
func namedPorts(pod *corev1.Pod) []datastore.EndpointPort {
	var out []datastore.EndpointPort
	seen := map[string]bool{}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, cp := range c.Ports {
				if cp.Name == "" || cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
					continue
				}
				protoName := string(cp.Protocol)
				if protoName == "" {
					protoName = string(corev1.ProtocolTCP)
				}
				proto, err := datastore.ParseProtocol(protoName)
				if err != nil || !proto.HasPorts() || datastore.ValidatePortName(cp.Name) != nil {
					continue
				}
				key := cp.Name + "/" + proto.String()
				if seen[key] {
					continue
				}
				seen[key] = true
				out = append(out, datastore.EndpointPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
			}
		}
	}
	return out
}

// TranslateNamespace is the Profile of a namespace: its labels under
// datastore.NamespaceLabelPrefix (those too long for that are left out,
// and reported).
func TranslateNamespace(ns *corev1.Namespace) (*datastore.Profile, []string) {
	r, _ := datastore.NewResource(datastore.KindProfile)
	p := r.(*datastore.Profile)
	p.Metadata.Name = ProfileName(ns.Name)
	p.Metadata.Labels = ownedLabels()
	p.Spec.LabelsToApply = map[string]string{}
	var skipped []string
	for k, v := range ns.Labels {
		key := datastore.NamespaceLabelPrefix + k
		if err := datastore.ValidateProfileLabel(key, v); err != nil {
			skipped = append(skipped, k)
			continue
		}
		p.Spec.LabelsToApply[key] = v
	}
	return p, skipped
}
