package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
)

func (b *goBGP) SetAdvertisements(ctx context.Context, advs []Advertisement) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	srv, err := b.serverLocked()
	if err != nil {
		return fmt.Errorf("bgp set advertisements: %w", err)
	}
	want := make(map[netip.Prefix]netip.Addr, len(advs))
	var errs []error
	for _, a := range advs {
		a.Prefix = netip.PrefixFrom(a.Prefix.Addr().Unmap(), a.Prefix.Bits())
		a.NextHop = a.NextHop.Unmap()
		if err := a.validate(&b.global); err != nil {
			errs = append(errs, err)
			continue
		}
		if nh, dup := want[a.Prefix]; dup {
			if nh != a.NextHop {
				errs = append(errs, fmt.Errorf("advertisement %s: listed with next hops %v and %v; keeping the first", a.Prefix, nh, a.NextHop))
			}
			continue
		}
		want[a.Prefix] = a.NextHop
	}

	withdrawn, announced := 0, 0
	for p, nh := range b.advs {
		if _, keep := want[p]; keep {
			continue
		}
		path, err := apiPath(p, nh)
		if err == nil {
			err = srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(b.advs, p)
		withdrawn++
	}
	for p, nh := range want {
		if have, ok := b.advs[p]; ok && have == nh {
			continue
		}
		// A new path for a prefix we announce replaces the old one (same
		// source), so a next-hop change is one AddPath.
		path, err := apiPath(p, nh)
		if err == nil {
			_, err = srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s via %v: %w", p, nh, err))
			continue
		}
		b.advs[p] = nh
		announced++
	}
	if withdrawn+announced > 0 {
		b.log.Debug("bgp advertisements updated", "announced", announced, "withdrawn", withdrawn, "total", len(b.advs))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bgp set advertisements: %w", err)
	}
	return nil
}

// apiPath builds the GoBGP path for one of our prefixes. An invalid next
// hop becomes the unspecified address, which GoBGP replaces with the
// session's local address (next hop self).
func apiPath(p netip.Prefix, nh netip.Addr) (*api.Path, error) {
	f := familyOf(p)
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: p.Addr().String(), PrefixLen: uint32(p.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	var hop *anypb.Any
	if f == IPv4Unicast {
		if !nh.IsValid() {
			nh = netip.IPv4Unspecified()
		}
		hop, err = anypb.New(&api.NextHopAttribute{NextHop: nh.String()})
	} else {
		if !nh.IsValid() {
			nh = netip.IPv6Unspecified()
		}
		hop, err = anypb.New(&api.MpReachNLRIAttribute{
			Family:   apiFamily(f),
			NextHops: []string{nh.String()},
			Nlris:    []*anypb.Any{nlri},
		})
	}
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: apiFamily(f), Nlri: nlri, Pattrs: []*anypb.Any{origin, hop}}, nil
}
