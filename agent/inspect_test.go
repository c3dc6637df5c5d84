package agent_test

// What the integration tests look at: kernel objects in the namespaces,
// the datastore, the kernel's route events.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/routes"
	"github.com/calyx-net/calyx/routes/netns"
)

// linkNames lists the interfaces of a namespace.
func linkNames(t *testing.T, nsPath string) []string {
	t.Helper()
	var names []string
	err := netns.DoHandle(nsPath, func(nh *netlink.Handle) error {
		links, err := nh.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listing links in %s: %v", nsPath, err)
	}
	return names
}

// workloadRoutes lists the host's IPv4 routes of the agent's workload
// protocol, by destination.
func (h *host) workloadRoutes() map[netip.Prefix]netlink.Route {
	h.t.Helper()
	out := map[netip.Prefix]netlink.Route{}
	err := netns.DoHandle(h.nsPath(), func(nh *netlink.Handle) error {
		rs, err := nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routes.ProtoWorkload, Table: syscall.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		for _, r := range rs {
			if r.Dst == nil {
				continue
			}
			p, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			bits, _ := r.Dst.Mask.Size()
			out[netip.PrefixFrom(p, bits)] = r
		}
		return err
	})
	if err != nil {
		h.t.Fatalf("listing routes in %s: %v", h.ns, err)
	}
	return out
}

// hostRouteOK reports whether the host has w's /32 via w's veth, with the
// workload protocol.
func (h *host) hostRouteOK(w *workload) error {
	r, ok := h.workloadRoutes()[netip.PrefixFrom(w.ip, 32)]
	if !ok {
		return fmt.Errorf("no proto %d route to %s/32 in %s", routes.ProtoWorkload, w.ip, h.ns)
	}
	var name string
	netns.DoHandle(h.nsPath(), func(nh *netlink.Handle) error {
		if l, err := nh.LinkByIndex(r.LinkIndex); err == nil {
			name = l.Attrs().Name
		}
		return nil
	})
	if name != w.hostIf {
		return fmt.Errorf("route to %s/32 goes via %q, want %s", w.ip, name, w.hostIf)
	}
	return nil
}

// sysctl reads or writes a sysctl of the host namespace.
func (h *host) sysctl(path string, value string) string {
	h.t.Helper()
	full := "/proc/sys/" + path
	var got string
	err := netns.Do(h.nsPath(), func() error {
		if value != "" {
			return os.WriteFile(full, []byte(value), 0o644)
		}
		b, err := os.ReadFile(full)
		got = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		h.t.Fatalf("sysctl %s in %s: %v", path, h.ns, err)
	}
	return got
}

// getEndpoint reads w's WorkloadEndpoint with calyxctl; nil when calyxctl
// says it does not exist.
func (h *host) getEndpoint(w *workload) *datastore.WorkloadEndpoint {
	h.t.Helper()
	out, err := h.calyxctl("", "get", "wep", w.endpoint, "-o", "json")
	if err != nil {
		if strings.Contains(strings.ToLower(out), "not found") {
			return nil
		}
		h.t.Fatalf("calyxctl get wep %s: %v\n%s", w.endpoint, err, out)
	}
	var wep datastore.WorkloadEndpoint
	if err := json.Unmarshal([]byte(out), &wep); err != nil {
		h.t.Fatalf("calyxctl get wep %s -o json: %v\n%s", w.endpoint, err, out)
	}
	return &wep
}

// ipamHolds says where IPAM still holds w: its handle key, and any
// allocation in any block with w's handle or address.
func (h *host) ipamHolds(w *workload) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := h.etcdClient()
	var held []string
	resp, err := c.Get(ctx, ipam.HandleKey(w.handle))
	if err != nil {
		h.t.Fatalf("reading %s: %v", ipam.HandleKey(w.handle), err)
	}
	if len(resp.Kvs) > 0 {
		held = append(held, "handle key "+ipam.HandleKey(w.handle))
	}
	for _, b := range h.blocks(ctx) {
		for _, a := range b.Allocations {
			if a.Handle == w.handle || (w.ip.IsValid() && a.IP == w.ip) {
				held = append(held, fmt.Sprintf("allocation %s (handle %s) in block %s", a.IP, a.Handle, b.Prefix))
			}
		}
	}
	return held
}

func (h *host) blocks(ctx context.Context) []*ipam.Block {
	h.t.Helper()
	resp, err := h.etcdClient().Get(ctx, ipam.BlocksPrefix, clientv3.WithPrefix())
	if err != nil {
		h.t.Fatalf("reading IPAM blocks: %v", err)
	}
	var out []*ipam.Block
	for _, kv := range resp.Kvs {
		b, err := ipam.DecodeBlock(kv.Value)
		if err != nil {
			h.t.Fatalf("decoding %s: %v", kv.Key, err)
		}
		out = append(out, b)
	}
	return out
}

// etcdKeys lists the keys under prefix.
func (h *host) etcdKeys(prefix string) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.etcdClient().Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		h.t.Fatalf("reading keys under %s: %v", prefix, err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// leftovers lists what remains of w after a DEL or a failed ADD: links in
// both namespaces, the host route, policy chains, the endpoint, the
// allocation. Empty means nothing is left.
func (h *host) leftovers(w *workload) []string {
	h.t.Helper()
	var left []string
	if _, err := os.Stat(w.nsPath()); err == nil {
		for _, n := range linkNames(h.t, w.nsPath()) {
			if n != "lo" && !slices.Contains(w.sharedWith, n) {
				left = append(left, "link "+n+" in the workload namespace")
			}
		}
	}
	for _, n := range linkNames(h.t, h.nsPath()) {
		if n == w.hostIf {
			left = append(left, "host link "+n)
		}
	}
	for dst, r := range h.workloadRoutes() {
		if dst.Bits() == 32 && (dst.Addr() == w.ip) {
			left = append(left, fmt.Sprintf("route %s proto %d", dst, r.Protocol))
		}
	}
	if rules := h.iptablesSave(); strings.Contains(rules, w.hostIf) {
		left = append(left, "iptables rules naming "+w.hostIf)
	}
	if h.getEndpoint(w) != nil {
		left = append(left, "WorkloadEndpoint "+w.endpoint)
	}
	return append(left, h.ipamHolds(w)...)
}

// waitNoLeftovers polls leftovers until empty (the policy dataplane
// catches up asynchronously) or the deadline.
func (h *host) waitNoLeftovers(w *workload, within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := h.leftovers(w)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s (container %s) left behind: %s", w.name, w.containerID[:12], strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *host) iptablesSave() string {
	h.t.Helper()
	return run(h.t, "ip", "netns", "exec", h.ns, "iptables-save")
}

// hostLinks lists the agent's workload links (cx...) in the host namespace.
func (h *host) hostLinks() []string {
	var out []string
	for _, n := range linkNames(h.t, h.nsPath()) {
		if strings.HasPrefix(n, routes.WorkloadIfacePrefix) {
			out = append(out, n)
		}
	}
	return out
}

// checkWired asserts the kernel state of a wired workload: eth0 with the
// /32 and the default route in the workload, the host veth with proxy-ARP
// and the proto-201 /32 through it.
func checkWired(t *testing.T, h *host, w *workload) {
	t.Helper()
	if names := linkNames(t, w.nsPath()); !slices.Contains(names, w.ifName) {
		t.Errorf("workload namespace links %v lack %s", names, w.ifName)
	}
	if names := linkNames(t, h.nsPath()); !slices.Contains(names, w.hostIf) {
		t.Errorf("host links %v lack %s", names, w.hostIf)
	}
	if err := h.hostRouteOK(w); err != nil {
		t.Error(err)
	}
	if v := h.sysctl("net/ipv4/conf/"+w.hostIf+"/proxy_arp", ""); v != "1" {
		t.Errorf("proxy_arp of %s = %s, want 1", w.hostIf, v)
	}
}

func linkMTU(t *testing.T, nsPath, name string) int {
	t.Helper()
	ns, err := vns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, nsPath, err)
	}
	return l.Attrs().MTU
}

// nothingLeft checks that no workload object of any kind remains on the
// host: links, /32 routes, policy chains, endpoints, IPAM handles and
// allocations.
func (h *host) nothingLeft(ws []*workload) error {
	var left []string
	if l := h.hostLinks(); len(l) > 0 {
		left = append(left, fmt.Sprintf("host links %v", l))
	}
	for dst := range h.workloadRoutes() {
		if dst.Bits() == 32 {
			left = append(left, "route "+dst.String())
		}
	}
	if rules := h.iptablesSave(); strings.Contains(rules, "cx-tw-cx") || strings.Contains(rules, "cx-fw-cx") {
		left = append(left, "per-endpoint iptables chains")
	}
	for _, w := range ws {
		if _, err := os.Stat(w.nsPath()); err == nil {
			for _, n := range linkNames(h.t, w.nsPath()) {
				if n != "lo" {
					left = append(left, n+" in "+w.name)
				}
			}
		}
	}
	if k := h.etcdKeys(datastore.KindPrefix(datastore.KindWorkloadEndpoint)); len(k) > 0 {
		left = append(left, fmt.Sprintf("%d WorkloadEndpoints", len(k)))
	}
	if k := h.etcdKeys(ipam.HandlesPrefix); len(k) > 0 {
		left = append(left, fmt.Sprintf("%d IPAM handles", len(k)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range h.blocks(ctx) {
		if len(b.Allocations) > 0 {
			left = append(left, fmt.Sprintf("%d allocations in block %s", len(b.Allocations), b.Prefix))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	return nil
}

func keys(m map[netip.Prefix]netlink.Route) []string {
	var out []string
	for k := range m {
		out = append(out, k.String())
	}
	sort.Strings(out)
	return out
}

func routeEventType(t uint16) string {
	switch t {
	case syscall.RTM_NEWROUTE:
		return "NEWROUTE"
	case syscall.RTM_DELROUTE:
		return "DELROUTE"
	}
	return fmt.Sprint(t)
}

// routeWatch collects the route events of a namespace.
type routeWatch struct {
	done   chan struct{}
	mu     sync.Mutex
	events []netlink.RouteUpdate
	fin    chan struct{}
}

func watchRoutes(t *testing.T, nsPath string) *routeWatch {
	t.Helper()
	ns, err := vns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ch := make(chan netlink.RouteUpdate, 1024)
	rw := &routeWatch{done: make(chan struct{}), fin: make(chan struct{})}
	err = netlink.RouteSubscribeWithOptions(ch, rw.done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ErrorCallback: func(err error) {
			select {
			case <-rw.done: // closing the subscription ends the receive with an error
			default:
				t.Errorf("route events: %v (events may have been missed)", err)
			}
		},
	})
	if err != nil {
		t.Fatalf("subscribing to route events in %s: %v", nsPath, err)
	}
	go func() {
		defer close(rw.fin)
		for u := range ch {
			rw.mu.Lock()
			rw.events = append(rw.events, u)
			rw.mu.Unlock()
		}
	}()
	t.Cleanup(func() { rw.stop() })
	return rw
}

func (rw *routeWatch) stop() {
	select {
	case <-rw.done:
	default:
		close(rw.done)
	}
	select {
	case <-rw.fin:
	case <-time.After(2 * time.Second):
	}
}

// snapshot is the events seen so far.
func (rw *routeWatch) snapshot() []netlink.RouteUpdate {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return slices.Clone(rw.events)
}

// sequence lists the event types seen for dst with the workload protocol,
// in order, e.g. "NEWROUTE DELROUTE NEWROUTE".
func (rw *routeWatch) sequence(dst netip.Prefix) string {
	var out []string
	for _, u := range rw.snapshot() {
		if u.Protocol != routes.ProtoWorkload || u.Dst == nil {
			continue
		}
		a, _ := netip.AddrFromSlice(u.Dst.IP.To4())
		bits, _ := u.Dst.Mask.Size()
		if netip.PrefixFrom(a, bits) == dst {
			out = append(out, routeEventType(u.Type))
		}
	}
	return strings.Join(out, " ")
}
