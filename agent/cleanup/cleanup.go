// Package cleanup removes every kernel object calyx-agent owns (calyx-agent
// cleanup), for an uninstall or a node leaving the cluster: the routes of
// Calyx's protocol numbers, the cx- iptables chains and the rules that jump
// to them, the cx- ipsets and, when asked, the cx workload veths. It
// recognises them by their marks alone, never by what a datastore says,
// so it works on a node whose agent is gone; anything else is left alone.
// Running it twice is the same as running it once.
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/routes"
)

// Options say what to remove and how.
type Options struct {
	// Workloads also deletes the cx veths, cutting every workload on the
	// node off the network (their other ends vanish with them).
	Workloads bool
	// IPv4 and IPv6 pick the families cleaned (both by default: the zero
	// value of Only).
	Only Family
	// IptablesBackend is "", "nft" or "legacy": which iptables binaries
	// to use ("": iptables and ip6tables on PATH, as the agent's auto).
	IptablesBackend string
	// DryRun lists what would be removed and removes nothing.
	DryRun bool
	// AgentSocket, when set, is checked first: cleanup refuses to run
	// while an agent answers there (it would program everything again).
	AgentSocket string
	// Out gets one line per object removed (or, with DryRun, found).
	Out io.Writer
}

// Family limits a cleanup to one IP version.
type Family int

const (
	Both Family = 0
	IPv4 Family = 4
	IPv6 Family = 6
)

func (o *Options) families() []Family {
	if o.Only == Both {
		return []Family{IPv4, IPv6}
	}
	return []Family{o.Only}
}

// ErrAgentRunning is returned when an agent answers on Options.AgentSocket.
var ErrAgentRunning = errors.New("calyx-agent is running")

// Report counts what was removed (or found, with DryRun).
type Report struct {
	Routes, Links, Rules, Chains, Sets int
}

// Total is the number of objects in the report.
func (r Report) Total() int { return r.Routes + r.Links + r.Rules + r.Chains + r.Sets }

func (r Report) String() string {
	return fmt.Sprintf("%d routes, %d interfaces, %d iptables rules, %d chains, %d ipsets", r.Routes, r.Links, r.Rules, r.Chains, r.Sets)
}

// Run removes what the agent owns in the network namespace it runs in.
// Routes go first, so that no workload is reachable once its policy
// chains are gone; then the workload interfaces; then iptables (the rules
// that reference our sets) and last the sets. It keeps going after a
// failure and returns every error joined.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.AgentSocket != "" && agentAnswers(o.AgentSocket) {
		return Report{}, fmt.Errorf("%w (it answers on %s): stop it first, or it programs everything again", ErrAgentRunning, o.AgentSocket)
	}
	c := &cleaner{o: o}
	var errs []error
	errs = append(errs, c.routes())
	if o.Workloads {
		errs = append(errs, c.links())
	}
	for _, f := range o.families() {
		errs = append(errs, c.iptables(ctx, f))
	}
	errs = append(errs, c.ipsets(ctx))
	return c.report, errors.Join(errs...)
}

func agentAnswers(socket string) bool {
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

type cleaner struct {
	o      Options
	report Report
}

// did prints one line for an object removed (or found).
func (c *cleaner) did(format string, args ...any) {
	verb := "removed "
	if c.o.DryRun {
		verb = "would remove "
	}
	fmt.Fprintf(c.o.Out, verb+format+"\n", args...)
}

// routeProtocols are the rtnetlink protocols of Calyx's routes.
var routeProtocols = []int{routes.ProtoWorkload, routes.ProtoBGP}

// routes deletes every route, in any table, of Calyx's protocol numbers.
func (c *cleaner) routes() error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	defer h.Close()
	var errs []error
	for _, f := range c.o.families() {
		family := unix.AF_INET
		if f == IPv6 {
			family = unix.AF_INET6
		}
		for _, proto := range routeProtocols {
			filter := &netlink.Route{Protocol: netlink.RouteProtocol(proto), Table: unix.RT_TABLE_UNSPEC}
			list, err := h.RouteListFiltered(family, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
			if err != nil {
				errs = append(errs, fmt.Errorf("listing IPv%d routes of protocol %d: %w", f, proto, err))
				continue
			}
			for i := range list {
				r := &list[i]
				if !c.o.DryRun {
					if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
						errs = append(errs, fmt.Errorf("deleting route %s: %w", describeRoute(r), err))
						continue
					}
				}
				c.report.Routes++
				c.did("route %s", describeRoute(r))
			}
		}
	}
	return errors.Join(errs...)
}

func describeRoute(r *netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	s := dst
	if r.Type == unix.RTN_BLACKHOLE {
		s = "blackhole " + dst
	}
	if r.Table != unix.RT_TABLE_MAIN {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s + fmt.Sprintf(" proto %d", r.Protocol)
}

// workloadLink is the name of a host-side workload veth: "cx" and 11 hex
// digits (routes/veth names them so).
var workloadLink = regexp.MustCompile(`^` + routes.WorkloadIfacePrefix + `[0-9a-f]{11}$`)

// links deletes the workload veths: only veths with a workload name.
func (c *cleaner) links() error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("interfaces: %w", err)
	}
	defer h.Close()
	list, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	var errs []error
	for _, l := range list {
		name := l.Attrs().Name
		if l.Type() != "veth" || !workloadLink.MatchString(name) {
			continue
		}
		if !c.o.DryRun {
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("deleting interface %s: %w", name, err))
				continue
			}
		}
		c.report.Links++
		c.did("interface %s", name)
	}
	return errors.Join(errs...)
}
