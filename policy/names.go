package policy

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// Family is an IP version: 4 or 6.
type Family uint8

const (
	V4 Family = 4
	V6 Family = 6
)

// Every kernel object this package owns starts with ownPrefix; nothing else is
// ever flushed, deleted or destroyed.
const ownPrefix = "cx-"

// Names of the fixed chains.
const (
	chainForward     = "cx-FORWARD"
	chainInput       = "cx-INPUT"
	chainOutput      = "cx-OUTPUT"
	chainPrerouting  = "cx-PREROUTING"
	chainPostrouting = "cx-POSTROUTING"
	chainFromDisp    = "cx-from-wl-dispatch"
	chainToDisp      = "cx-to-wl-dispatch"
)

// Names of the fixed sets (the v6 variants insert a "6").
const (
	setPoolsAll  = "cx-pools-all"
	setPoolsMasq = "cx-pools-masq"
	// setOpenWL holds (address, interface) of every local endpoint no
	// policy selects (hash:net,iface); v6: cx-open6-wl.
	setOpenWL = "cx-open-wl"
)

// Table is an iptables table this package writes to.
type Table string

const (
	TableRaw    Table = "raw"
	TableNAT    Table = "nat"
	TableFilter Table = "filter"
)

// tables is the order tables are written in: none references another, so
// the order only matters for readability of logs.
var tables = []Table{TableRaw, TableNAT, TableFilter}

// hook is one jump from a built-in chain into our top-level chain.
type hook struct {
	table   Table
	builtin string
	target  string
}

var hooks = []hook{
	{TableRaw, "PREROUTING", chainPrerouting},
	{TableNAT, "POSTROUTING", chainPostrouting},
	{TableFilter, "FORWARD", chainForward},
	{TableFilter, "INPUT", chainInput},
	{TableFilter, "OUTPUT", chainOutput},
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// shortID is a stable lower-case base32 digest of s, n characters long.
func shortID(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToLower(idEncoding.EncodeToString(sum[:]))[:n]
}

// policyIDLength keeps "cx-pi-<id>" within iptables' 28-character chain
// names with room to spare.
const policyIDLength = 16

func policyChainName(policyName string, dir direction) string {
	if dir == ingress {
		return "cx-pi-" + shortID(policyName, policyIDLength)
	}
	return "cx-po-" + shortID(policyName, policyIDLength)
}

// endpointChainName is cx-fw-<if> (from workload: its egress) or
// cx-tw-<if> (to workload: its ingress).
func endpointChainName(ifname string, dir direction) string {
	if dir == ingress {
		return "cx-tw-" + ifname
	}
	return "cx-fw-" + ifname
}

// familySetName turns a v4 set name into its v6 twin: cx-s-x -> cx-s6-x,
// cx-pools-all -> cx-pools6-all.
func familySetName(v4name string, f Family) string {
	if f == V4 {
		return v4name
	}
	rest := v4name[len(ownPrefix):]
	i := strings.IndexByte(rest, '-')
	if i < 0 {
		return v4name + "6"
	}
	return ownPrefix + rest[:i] + "6" + rest[i:]
}

// selectorSetName names the set holding the addresses of every endpoint the
// selector matches; equal canonical selectors share it.
func selectorSetName(selID string, f Family) string {
	return familySetName("cx-s-"+selID, f)
}

// netSetName names the set holding a list of CIDRs used by one or more rules.
func netSetName(canonical string, f Family) string {
	return familySetName("cx-n-"+shortID(canonical, 20), f)
}
