package plugin

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	apipb "github.com/calyx-net/calyx/cni/api"
)

// toCNIResult builds a CNI 1.1 result from the agent's answer, checking
// what the CNI types cannot represent (bad addresses, dangling indexes).
func toCNIResult(r *apipb.Result) (*current.Result, error) {
	out := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, iface := range r.GetInterfaces() {
		out.Interfaces = append(out.Interfaces, &current.Interface{
			Name:    iface.GetName(),
			Mac:     iface.GetMac(),
			Mtu:     int(iface.GetMtu()),
			Sandbox: iface.GetSandbox(),
		})
	}
	for i, ip := range r.GetIps() {
		addr, err := parseAddress(ip.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("ips[%d].address: %w", i, err)
		}
		cfg := &current.IPConfig{Address: addr}
		if gw := ip.GetGateway(); gw != "" {
			if cfg.Gateway = net.ParseIP(gw); cfg.Gateway == nil {
				return nil, fmt.Errorf("ips[%d].gateway: %q is not an IP address", i, gw)
			}
		}
		if ip.Interface != nil {
			idx := int(ip.GetInterface())
			if idx < 0 || idx >= len(out.Interfaces) {
				return nil, fmt.Errorf("ips[%d].interface: index %d, but there are %d interfaces", i, idx, len(out.Interfaces))
			}
			cfg.Interface = current.Int(idx)
		}
		out.IPs = append(out.IPs, cfg)
	}
	for i, rt := range r.GetRoutes() {
		_, dst, err := net.ParseCIDR(rt.GetDst())
		if err != nil {
			return nil, fmt.Errorf("routes[%d].dst: %q is not a CIDR", i, rt.GetDst())
		}
		route := &types.Route{Dst: *dst}
		if gw := rt.GetGw(); gw != "" {
			if route.GW = net.ParseIP(gw); route.GW == nil {
				return nil, fmt.Errorf("routes[%d].gw: %q is not an IP address", i, gw)
			}
		}
		out.Routes = append(out.Routes, route)
	}
	if d := r.GetDns(); d != nil {
		out.DNS = types.DNS{
			Nameservers: d.GetNameservers(),
			Domain:      d.GetDomain(),
			Search:      d.GetSearch(),
			Options:     d.GetOptions(),
		}
	}
	return out, nil
}

// fromCNIResult is the reverse, for a prevResult the agent should check.
func fromCNIResult(r *current.Result) *apipb.Result {
	out := &apipb.Result{}
	for _, iface := range r.Interfaces {
		out.Interfaces = append(out.Interfaces, &apipb.Interface{
			Name:    iface.Name,
			Mac:     iface.Mac,
			Sandbox: iface.Sandbox,
			Mtu:     uint32(max(iface.Mtu, 0)),
		})
	}
	for _, ip := range r.IPs {
		cfg := &apipb.IPConfig{Address: ip.Address.String()}
		if ip.Gateway != nil {
			cfg.Gateway = ip.Gateway.String()
		}
		if ip.Interface != nil {
			idx := int32(*ip.Interface)
			cfg.Interface = &idx
		}
		out.Ips = append(out.Ips, cfg)
	}
	for _, rt := range r.Routes {
		route := &apipb.Route{Dst: rt.Dst.String()}
		if rt.GW != nil {
			route.Gw = rt.GW.String()
		}
		out.Routes = append(out.Routes, route)
	}
	if !r.DNS.IsEmpty() {
		out.Dns = &apipb.DNS{
			Nameservers: r.DNS.Nameservers,
			Domain:      r.DNS.Domain,
			Search:      r.DNS.Search,
			Options:     r.DNS.Options,
		}
	}
	return out
}

// parseAddress keeps the host part, as a CNI IPConfig.Address does.
func parseAddress(s string) (net.IPNet, error) {
	ip, network, err := net.ParseCIDR(s)
	if err != nil {
		return net.IPNet{}, fmt.Errorf("%q is not an address with prefix length", s)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.IPNet{IP: ip, Mask: network.Mask}, nil
}
