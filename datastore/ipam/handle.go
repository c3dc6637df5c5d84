package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// Handle is what one workload attachment holds, stored at handles/<id>. It
// lists each address with its block so a release touches exactly those
// blocks, in one transaction.
type Handle struct {
	ID   string `json:"handle"`
	Node string `json:"node,omitempty"`
	Attributes
	Created   time.Time       `json:"created"`
	Addresses []HandleAddress `json:"addresses"`
}

// HandleAddress is one address of a handle and the block it lies in.
type HandleAddress struct {
	IP    netip.Addr   `json:"ip"`
	Block netip.Prefix `json:"block"`
}

// Prefixes are the handle's addresses as /32 and /128, IPv4 first.
func (h *Handle) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(h.Addresses))
	for _, fam := range []Family{V4, V6} {
		for _, a := range h.Addresses {
			if familyOf(a.IP) == fam {
				out = append(out, netip.PrefixFrom(a.IP, a.IP.BitLen()))
			}
		}
	}
	return out
}

// IPs are the handle's addresses.
func (h *Handle) IPs() []netip.Addr {
	out := make([]netip.Addr, len(h.Addresses))
	for i, a := range h.Addresses {
		out[i] = a.IP
	}
	return out
}

func decodeHandle(data []byte) (*Handle, error) {
	var h Handle
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("decoding IPAM handle: %w", err)
	}
	for _, a := range h.Addresses {
		if !a.Block.Contains(a.IP) {
			return nil, fmt.Errorf("IPAM handle %q: %s is not inside its block %s", h.ID, a.IP, a.Block)
		}
	}
	return &h, nil
}
