package ipam

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/calyx-net/calyx/datastore"
)

// Key prefixes under /calyx/v1/ipam/.
const (
	BlocksPrefix   = datastore.IPAMPrefix + "blocks/"
	AffinityPrefix = datastore.IPAMPrefix + "affinity/"
	HandlesPrefix  = datastore.IPAMPrefix + "handles/"
)

// prefixName writes a CIDR as one key segment: 10.244.0.0/26 -> 10.244.0.0-26
// (a "/" would make the CIDR look like two path levels).
func prefixName(p netip.Prefix) string {
	return fmt.Sprintf("%s-%d", p.Addr(), p.Bits())
}

// parsePrefixName reads what prefixName wrote.
func parsePrefixName(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("IPAM key segment %q is not <address>-<bits>", s)
	}
	p, err := netip.ParsePrefix(s[:i] + "/" + s[i+1:])
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("IPAM key segment %q: %w", s, err)
	}
	return p, nil
}

// BlockKey is the etcd key of the block with this CIDR.
func BlockKey(cidr netip.Prefix) string { return BlocksPrefix + prefixName(cidr) }

// AffinityKey is the etcd key of node's claim on the block.
func AffinityKey(node string, cidr netip.Prefix) string {
	return nodeAffinityPrefix(node) + prefixName(cidr)
}

func nodeAffinityPrefix(node string) string { return AffinityPrefix + node + "/" }

// HandleKey is the etcd key of a handle.
func HandleKey(id string) string { return HandlesPrefix + id }

// AttachmentHandle is the handle of one workload attachment: the node, the
// container ID and the interface name inside the container, so that two
// interfaces of one container get separate addresses, a repeated ADD finds
// its own, and the same container ID on two nodes (runtimes only promise
// uniqueness per host) gets two handles that a DEL on one node never
// touches on the other. The parts are joined by "/" after escaping any
// "/" and "%" in them, so no two attachments share a handle ("abc.x" with
// "eth0" and "abc" with "x.eth0" did, in the legacy form).
func AttachmentHandle(node, containerID, ifName string) string {
	return node + "/" + url.PathEscape(containerID) + "/" + url.PathEscape(ifName)
}

// HandleID is the legacy handle (containerID "." ifName), which agents
// before node-scoped handles wrote: ambiguous, and shared by every node's
// container with that ID. ReleaseAttachment still looks for it, so that a
// workload added before an upgrade is released by its DEL.
func HandleID(containerID, ifName string) string { return containerID + "." + ifName }

// parseBlockKey returns the CIDR of a blocks/ key.
func parseBlockKey(key string) (netip.Prefix, error) {
	rest, ok := strings.CutPrefix(key, BlocksPrefix)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q is not a block key", key)
	}
	return parsePrefixName(rest)
}

// parseAffinityKey returns the node and CIDR of an affinity/ key.
func parseAffinityKey(key string) (string, netip.Prefix, error) {
	rest, ok := strings.CutPrefix(key, AffinityPrefix)
	node, cidr, found := strings.Cut(rest, "/")
	if !ok || !found || node == "" {
		return "", netip.Prefix{}, fmt.Errorf("%q is not an affinity key", key)
	}
	p, err := parsePrefixName(cidr)
	return node, p, err
}

func validHandle(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("empty handle (want AttachmentHandle(node, container id, interface))")
	case len(id) > 512:
		return fmt.Errorf("handle %.40q... is longer than 512 bytes", id)
	case strings.ContainsAny(id, "\x00\n"):
		return fmt.Errorf("handle %q holds a control character", id)
	}
	return nil
}
