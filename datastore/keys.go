package datastore

import (
	"fmt"
	"strings"
)

// Prefix is the root of everything Calyx keeps in etcd.
const Prefix = "/calyx/v1/"

// IPAMPrefix is where IPAM keeps blocks, affinities and handles.
const IPAMPrefix = Prefix + "ipam/"

// KindPrefix is the key prefix of all objects of a kind:
// /calyx/v1/<kind in lower case>/.
func KindPrefix(k Kind) string { return Prefix + strings.ToLower(string(k)) + "/" }

// Key is the etcd key of one object: /calyx/v1/<kind>/<name>.
func Key(k Kind, name string) string { return KindPrefix(k) + name }

// ParseKey splits a resource key back into kind and name. ok is false for
// keys that are not resources (IPAM keys, foreign keys).
func ParseKey(key string) (kind Kind, name string, ok bool) {
	rest, found := strings.CutPrefix(key, Prefix)
	if !found {
		return "", "", false
	}
	kindPart, name, found := strings.Cut(rest, "/")
	if !found || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	for _, k := range Kinds {
		if strings.ToLower(string(k)) == kindPart {
			return k, name, true
		}
	}
	return "", "", false
}

// WorkloadEndpointName derives a WorkloadEndpoint's name from the node, the
// container ID and the container's interface name. It is a DNS-1123 label
// that is the same for the same attachment every time, so a repeated CNI ADD
// finds the same endpoint.
func WorkloadEndpointName(node, containerID, ifName string) string {
	raw := fmt.Sprintf("%s-%s-%s", node, containerID, ifName)
	if name := sanitizeLabel(raw); name == raw && len(name) <= 63 {
		return name
	}
	// Too long (runtimes use 64-hex container IDs), or sanitizing changed
	// it and so might merge distinct attachments: keep a readable head and
	// make the name unique with a hash of the whole attachment.
	id := containerID
	if len(id) > 12 {
		id = id[:12]
	}
	head := sanitizeLabel(fmt.Sprintf("%s-%s-%s", node, id, ifName))
	h := shortHash(node + "/" + containerID + "/" + ifName)
	if len(head) > 63-len(h)-1 {
		head = strings.TrimRight(head[:63-len(h)-1], "-")
	}
	return head + "-" + h
}

func sanitizeLabel(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}
