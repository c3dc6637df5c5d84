package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// advertised is what the speaker announces for one prefix.
type advertised struct {
	nextHop     netip.Addr // invalid: next hop self
	communities []uint32
}

func (a advertised) equal(b advertised) bool {
	return a.nextHop == b.nextHop && slices.Equal(a.communities, b.communities)
}

func (b *goBGP) SetAdvertisements(ctx context.Context, advs []Advertisement) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	srv, err := b.serverLocked()
	if err != nil {
		return fmt.Errorf("bgp set advertisements: %w", err)
	}
	want := make(map[netip.Prefix]advertised, len(advs))
	var errs []error
	for _, a := range advs {
		a.Prefix = netip.PrefixFrom(a.Prefix.Addr().Unmap(), a.Prefix.Bits())
		a.NextHop = a.NextHop.Unmap()
		if err := a.validate(&b.global); err != nil {
			errs = append(errs, err)
			continue
		}
		w := advertised{nextHop: a.NextHop, communities: sortedCommunities(a.Communities)}
		if have, dup := want[a.Prefix]; dup {
			if !have.equal(w) {
				errs = append(errs, fmt.Errorf("advertisement %s: listed twice with different next hops or communities; keeping the first", a.Prefix))
			}
			continue
		}
		want[a.Prefix] = w
	}

	// One call each for the withdrawals and the announcements: GoBGP
	// handles a call's paths in one pass of its management loop.
	var gone, added []*apiutil.Path
	var goneP, addedP []netip.Prefix
	for p, have := range b.advs {
		if _, keep := want[p]; !keep {
			gone, goneP = append(gone, nativePath(p, have)), append(goneP, p)
		}
	}
	for p, w := range want {
		// A new path for a prefix we announce replaces the old one (same
		// source), so a change of next hop or communities is one AddPath.
		if have, ok := b.advs[p]; !ok || !have.equal(w) {
			added, addedP = append(added, nativePath(p, w)), append(addedP, p)
		}
	}
	if len(gone) > 0 {
		if err := srv.DeletePath(apiutil.DeletePathRequest{Paths: gone}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", goneP, err))
		} else {
			for _, p := range goneP {
				delete(b.advs, p)
			}
		}
	}
	if len(added) > 0 {
		resps, err := srv.AddPath(apiutil.AddPathRequest{Paths: added})
		for i, p := range addedP {
			switch {
			case i < len(resps) && resps[i].Error != nil:
				errs = append(errs, fmt.Errorf("announce %s: %w", p, resps[i].Error))
			case err != nil && len(resps) == 0:
				errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			default:
				b.advs[p] = want[p]
			}
		}
	}
	if len(gone)+len(added) > 0 {
		b.log.Debug("bgp advertisements updated", "announced", len(added), "withdrawn", len(gone), "total", len(b.advs))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bgp set advertisements: %w", err)
	}
	return nil
}

func sortedCommunities(cs []uint32) []uint32 {
	if len(cs) == 0 {
		return nil
	}
	out := slices.Clone(cs)
	slices.Sort(out)
	return slices.Compact(out)
}

// nativePath builds GoBGP's path for one of our prefixes, without any
// protobuf. An invalid next hop becomes the unspecified address, which
// GoBGP replaces with the session's local address (next hop self).
func nativePath(p netip.Prefix, a advertised) *apiutil.Path {
	nlri, _ := gobgp.NewIPAddrPrefix(p) // p is valid: validate checked it
	attrs := []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	nh, fam := a.nextHop, gobgp.RF_IPv4_UC
	if p.Addr().Is4() {
		if !nh.IsValid() {
			nh = netip.IPv4Unspecified()
		}
		hop, _ := gobgp.NewPathAttributeNextHop(nh)
		attrs = append(attrs, hop)
	} else {
		if !nh.IsValid() {
			nh = netip.IPv6Unspecified()
		}
		fam = gobgp.RF_IPv6_UC
		mp, _ := gobgp.NewPathAttributeMpReachNLRI(fam, []gobgp.PathNLRI{{NLRI: nlri}}, nh)
		attrs = append(attrs, mp)
	}
	if len(a.communities) > 0 {
		attrs = append(attrs, gobgp.NewPathAttributeCommunities(a.communities))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Age: time.Now().Unix()}
}
