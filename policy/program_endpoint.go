package policy

import (
	"context"
	"errors"
	"fmt"
)

// ErrUnknownEndpoint is returned by ProgramEndpoint for a name SetEndpoint
// did not take: its interface stays blocked by the fail-closed rules.
var ErrUnknownEndpoint = errors.New("endpoint is not known to the policy dataplane")

// ProgramEndpoint puts in force the policy of an endpoint already given
// with SetEndpoint, and returns once the kernel has it: the call for the
// CNI ADD path.
//
// It applies everything pending, as Apply does, so that the new endpoint's
// own state and its addresses in other endpoints' rules (a Deny by
// selector included) are never written apart. For an endpoint that no
// policy selects, that is set members only: its (address, interface)
// entries in the open sets cx-open-wl / cx-open6-wl and its addresses in
// the sets of active policies' rule selectors that match it (sets that
// exist already). Such a change goes over netlink, without running a
// process, when nothing else pending needs a chain written or a set
// created; otherwise, or when netlink fails, it takes the usual ipset
// restore and iptables-restore path. A selected endpoint gets its chains
// as Apply writes them; when it makes a policy active on this node, that
// policy's sets are created and filled in the ipset write before them.
func (d *Dataplane) ProgramEndpoint(ctx context.Context, name string) error {
	d.mu.Lock()
	_, known := d.m.endpoints[name]
	d.mu.Unlock()
	if err := d.Apply(ctx); err != nil {
		return fmt.Errorf("programming policy for endpoint %q: %w", name, err)
	}
	if !known {
		return fmt.Errorf("programming policy for endpoint %q: %w", name, ErrUnknownEndpoint)
	}
	return nil
}
