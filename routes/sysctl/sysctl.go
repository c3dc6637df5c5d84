// Package sysctl reads and writes /proc/sys/net settings and knows the
// settings Calyx wants on its interfaces. Files under /proc/sys/net resolve
// to the network namespace of the calling thread: to work on another
// namespace, call these functions inside routes/netns.Do.
package sysctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Root is where the sysctl tree is mounted.
const Root = "/proc/sys"

// Setting is one sysctl: Key is a slash-separated path under /proc/sys
// (slashes, not dots, because interface names may contain dots).
type Setting struct {
	Key   string
	Value string
}

func (s Setting) String() string { return s.Key + "=" + s.Value }

// Read returns the value of key, trimmed.
func Read(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(Root, key))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Write sets key to value.
func Write(key, value string) error {
	if err := os.WriteFile(filepath.Join(Root, key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// Ensure reads every setting and writes only those that differ. It keeps
// going after a failure and returns how many it changed and the joined
// errors.
func Ensure(settings []Setting) (changed int, err error) {
	var errs []error
	for _, s := range settings {
		cur, rerr := Read(s.Key)
		if rerr == nil && cur == s.Value {
			continue
		}
		if werr := Write(s.Key, s.Value); werr != nil {
			errs = append(errs, werr)
			continue
		}
		changed++
	}
	return changed, errors.Join(errs...)
}

// Global returns the namespace-wide settings a routing host needs.
func Global(ipv6 bool) []Setting {
	s := []Setting{{"net/ipv4/ip_forward", "1"}}
	if ipv6 {
		s = append(s, Setting{"net/ipv6/conf/all/forwarding", "1"})
	}
	return s
}

// HostInterface returns the settings for the host end of a workload veth:
// proxy-ARP answers the workload's ARP for its gateway 169.254.1.1 at once
// (proxy_delay 0, the default 80 delays the first packet by ~100 ms), and
// strict reverse-path filtering stops a workload from spoofing sources.
func HostInterface(ifname string, ipv6 bool) []Setting {
	s := []Setting{
		{"net/ipv4/conf/" + ifname + "/proxy_arp", "1"},
		{"net/ipv4/neigh/" + ifname + "/proxy_delay", "0"},
		{"net/ipv4/conf/" + ifname + "/rp_filter", "1"},
	}
	if ipv6 {
		s = append(s,
			Setting{"net/ipv6/conf/" + ifname + "/proxy_ndp", "1"},
			Setting{"net/ipv6/conf/" + ifname + "/forwarding", "1"},
		)
	}
	// Never take a router advertisement from a workload: on an IPv4-only
	// node the veth has IPv6 (link-local) with forwarding off, where the
	// kernel's default (accept_ra=1) would let a pod become the host's
	// IPv6 router. Only where the namespace has IPv6 at all.
	if IPv6Available() {
		s = append(s, Setting{"net/ipv6/conf/" + ifname + "/accept_ra", "0"})
	}
	return s
}

// WorkloadInterface returns the settings for the workload end (eth0) when it
// gets IPv6 addresses: IPv6 enabled and no duplicate address detection, so
// the address is usable the moment the workload starts.
func WorkloadInterface(ifname string) []Setting {
	return []Setting{
		{"net/ipv6/conf/" + ifname + "/disable_ipv6", "0"},
		{"net/ipv6/conf/" + ifname + "/accept_dad", "0"},
	}
}

// WorkloadInterfaceIPv4Only returns the settings for the workload end of
// an IPv4-only workload: no IPv6 at all, so the workload can neither reach
// its host over link-local IPv6 nor send it router advertisements.
func WorkloadInterfaceIPv4Only(ifname string) []Setting {
	return []Setting{{"net/ipv6/conf/" + ifname + "/disable_ipv6", "1"}}
}

// IPv6Available reports whether the calling thread's namespace has IPv6.
func IPv6Available() bool {
	_, err := os.Stat(filepath.Join(Root, "net/ipv6/conf/all"))
	return err == nil
}
