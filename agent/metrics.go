package agent

import (
	"context"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/calyx-net/calyx/bgp"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/internal/version"
)

// metrics are the agent's Prometheus series (docs/operations.md lists
// them). Most are read at scrape time from what the parts already keep
// (route tables' and policy's counters, the cluster state, the BGP
// speaker's status); the rest are observed where the agent does the work.
type metrics struct {
	registry       *prometheus.Registry
	cniRequests    *prometheus.CounterVec
	cniDuration    *prometheus.HistogramVec
	localEndpoints prometheus.Gauge
	applySeconds   *prometheus.HistogramVec
	applyErrors    *prometheus.CounterVec
	dsEvents       *prometheus.CounterVec
	dsResyncs      prometheus.Counter
	dsSyncs        int // in-sync events seen; the first is not a resync
}

// dataplaneParts are the values of calyx_dataplane_apply_seconds{part}.
var dataplaneParts = []string{"routes", "policy", "bgp"}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_cni_requests_total", Help: "CNI requests served, by verb and result (ok or the CNI error code).",
		}, []string{"verb", "result"}),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "calyx_cni_request_duration_seconds", Help: "Time to serve a CNI request in the agent.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"verb"}),
		localEndpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calyx_local_endpoints", Help: "Workload endpoints on this node.",
		}),
		applySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "calyx_dataplane_apply_seconds", Help: "Time of one dataplane apply that changed something (or failed), by part: routes, policy, bgp.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"part"}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_dataplane_apply_errors_total", Help: "Dataplane applies that failed, by part.",
		}, []string{"part"}),
		dsEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_datastore_events_total", Help: "Datastore changes the agent received, by kind (IPAMBlock for address blocks).",
		}, []string{"kind"}),
		dsResyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_datastore_resyncs_total", Help: "Full relists of the datastore after the first (watch compacted, etcd lost).",
		}),
	}
	for _, p := range dataplaneParts {
		m.applySeconds.WithLabelValues(p)
		m.applyErrors.WithLabelValues(p)
	}
	for _, k := range datastore.Kinds {
		m.dsEvents.WithLabelValues(string(k))
	}
	m.dsEvents.WithLabelValues(kindIPAMBlock)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "calyx_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version.Version, "commit": version.CommitID(), "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	m.registry.MustRegister(m.cniRequests, m.cniDuration, m.localEndpoints, m.applySeconds, m.applyErrors, m.dsEvents, m.dsResyncs, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "calyx_datastore_in_sync", Help: "1 once the datastore syncer is in sync."},
			func() float64 { return boolFloat(a.isSynced()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "calyx_policy_ready", Help: "1 while policy is programmed and writes succeed."},
			func() float64 { return boolFloat(a.policy != nil && a.policy.Ready() == nil) }),
		notInForce(a, notInForceUndecodable), notInForce(a, notInForceRefused),
		&stateCollector{a: a},
	)
	return m
}

// observeApply records one dataplane apply of part.
func (m *metrics) observeApply(part string, took time.Duration, err error) {
	m.applySeconds.WithLabelValues(part).Observe(took.Seconds())
	if err != nil {
		m.applyErrors.WithLabelValues(part).Inc()
	}
}

// applyObserver is a part's OnApply hook.
func (m *metrics) applyObserver(part string) func(time.Duration, error) {
	return func(took time.Duration, err error) { m.observeApply(part, took, err) }
}

// kindIPAMBlock labels the events of IPAM blocks, which are not a
// resource kind.
const kindIPAMBlock = "IPAMBlock"

// datastoreEvents counts one batch from the syncer. Called from the
// syncer's goroutine only.
func (m *metrics) datastoreEvents(evs []datastore.Event) {
	for _, ev := range evs {
		if ev.Type == datastore.EventInSync {
			if m.dsSyncs++; m.dsSyncs > 1 {
				m.dsResyncs.Inc()
			}
			continue
		}
		v := ev.Value
		if v == nil {
			v = ev.Prev
		}
		kind := "other"
		switch r := v.(type) {
		case datastore.Resource:
			kind = string(r.GetKind())
		case interface{ CIDR() netip.Prefix }:
			kind = kindIPAMBlock
		}
		m.dsEvents.WithLabelValues(kind).Inc()
	}
}

// notInForce counts the resources not in force as stored, for one reason
// (see input.go): any makes /readyz fail.
func notInForce(a *Agent, reason string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "calyx_resources_not_in_force",
		Help:        "Resources in etcd that the agent does not apply as stored (undecodable, or refused by policy); the last good version stays in force.",
		ConstLabels: prometheus.Labels{"reason": reason},
	}, func() float64 {
		_, undecodable, refused := a.inputProblems()
		if reason == notInForceUndecodable {
			return float64(undecodable)
		}
		return float64(refused)
	})
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// stateCollector reads, at each scrape, the state the agent and its parts
// keep: route tables, policy, IPAM blocks and BGP sessions.
type stateCollector struct{ a *Agent }

var (
	descRoutes = prometheus.NewDesc("calyx_routes", "Routes the agent keeps in the kernel, by table: workload (local /32s and block blackholes, protocol 201) and bgp (learned, protocol 202).",
		[]string{"table"}, nil)
	descRoutesPending = prometheus.NewDesc("calyx_routes_pending", "Desired routes waiting for their interface to exist and be up.",
		[]string{"table"}, nil)
	descRouteWrites   = prometheus.NewDesc("calyx_route_writes_total", "Kernel route writes (adds, replaces, deletes) by the workload route table.", nil, nil)
	descLearnedWrites = prometheus.NewDesc("calyx_learned_route_writes_total", "Kernel route writes by the BGP-learned route table.", nil, nil)
	descRouteErrors   = prometheus.NewDesc("calyx_route_write_errors_total", "Kernel route writes that failed, by table.", []string{"table"}, nil)
	descRouteResyncs  = prometheus.NewDesc("calyx_route_resyncs_total", "Full re-reads of the kernel's routes (drift repair), by table.", []string{"table"}, nil)
	descChains        = prometheus.NewDesc("calyx_policy_chains_written_total", "iptables chains written.", nil, nil)
	descRestores      = prometheus.NewDesc("calyx_iptables_restore_total", "iptables-restore runs, by family (ipv4, ipv6) and result (ok, error).",
		[]string{"family", "result"}, nil)
	descSets       = prometheus.NewDesc("calyx_ipsets", "cx- ipsets in the kernel.", nil, nil)
	descSetMembers = prometheus.NewDesc("calyx_ipset_members", "Members of all cx- ipsets in the kernel.", nil, nil)

	descIPAMInUse = prometheus.NewDesc("calyx_ipam_addresses_in_use", "Addresses allocated to this node's workloads (in its own blocks or borrowed), by pool.",
		[]string{"pool"}, nil)
	descIPAMBlocks    = prometheus.NewDesc("calyx_ipam_blocks", "Address blocks affine to this node, by pool.", []string{"pool"}, nil)
	descIPAMBlockSize = prometheus.NewDesc("calyx_ipam_block_addresses", "Addresses in this node's blocks (their capacity), by pool.", []string{"pool"}, nil)
	descPoolSize      = prometheus.NewDesc("calyx_ipam_pool_addresses", "Addresses in each pool's CIDR (cluster-wide; every agent reports the same).", []string{"pool"}, nil)
	descPoolUsed      = prometheus.NewDesc("calyx_ipam_pool_addresses_in_use", "Addresses allocated from each pool, all nodes (cluster-wide).", []string{"pool"}, nil)

	descBGPSessions = prometheus.NewDesc("calyx_bgp_sessions", "Configured BGP sessions by state (idle, connect, active, opensent, openconfirm, established).",
		[]string{"state"}, nil)
	descBGPUp         = prometheus.NewDesc("calyx_bgp_peer_up", "1 while the session with the peer is established.", []string{"peer", "type"}, nil)
	descBGPReceived   = prometheus.NewDesc("calyx_bgp_prefixes_received", "Prefixes received from the peer.", []string{"peer"}, nil)
	descBGPAccepted   = prometheus.NewDesc("calyx_bgp_prefixes_accepted", "Prefixes from the peer accepted by import policy.", []string{"peer"}, nil)
	descBGPAdvertised = prometheus.NewDesc("calyx_bgp_prefixes_advertised", "The node's own prefixes announced to the peer (reflected routes not counted).", []string{"peer"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRoutes, descRoutesPending, descRouteWrites, descLearnedWrites, descRouteErrors, descRouteResyncs,
		descChains, descRestores, descSets, descSetMembers, descIPAMInUse, descIPAMBlocks, descIPAMBlockSize, descPoolSize, descPoolUsed,
		descBGPSessions, descBGPUp, descBGPReceived, descBGPAccepted, descBGPAdvertised} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if a.local != nil && a.learned != nil {
		ls, bs := a.local.Stats(), a.learned.Stats()
		for table, s := range map[string]struct {
			desired, pending int
			errors, resyncs  uint64
		}{"workload": {ls.Desired, ls.Pending, ls.Errors, ls.Resyncs}, "bgp": {bs.Desired, bs.Pending, bs.Errors, bs.Resyncs}} {
			gauge(descRoutes, float64(s.desired-s.pending), table)
			gauge(descRoutesPending, float64(s.pending), table)
			counter(descRouteErrors, float64(s.errors), table)
			counter(descRouteResyncs, float64(s.resyncs), table)
		}
		counter(descRouteWrites, float64(ls.Writes()))
		counter(descLearnedWrites, float64(bs.Writes()))
	}
	if a.policy != nil {
		ps := a.policy.Stats()
		counter(descChains, float64(ps.ChainsWritten))
		for fam, r := range map[string]struct{ ok, failed int }{"ipv4": {ps.RestoresV4.OK, ps.RestoresV4.Failed}, "ipv6": {ps.RestoresV6.OK, ps.RestoresV6.Failed}} {
			counter(descRestores, float64(r.ok), fam, "ok")
			counter(descRestores, float64(r.failed), fam, "error")
		}
		gauge(descSets, float64(ps.Sets))
		gauge(descSetMembers, float64(ps.SetMembers))
	}
	c.collectIPAM(gauge)
	c.collectBGP(gauge)
}

// collectIPAM counts from the blocks the syncer keeps (every block of the
// cluster).
func (c *stateCollector) collectIPAM(gauge func(*prometheus.Desc, float64, ...string)) {
	a := c.a
	type poolUse struct{ inUse, blocks, blockAddrs, size, allocated int }
	use := map[string]*poolUse{}
	get := func(pool string) *poolUse {
		if use[pool] == nil {
			use[pool] = &poolUse{}
		}
		return use[pool]
	}
	a.mu.Lock()
	for name, p := range a.state.pools {
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil {
			get(name).size = prefixSize(pfx)
		}
	}
	for _, b := range a.state.blocks {
		u := get(b.Pool)
		u.allocated += b.Used()
		if b.Affinity == a.node {
			u.blocks++
			u.blockAddrs += b.Size()
		}
		for _, al := range b.Allocations {
			if al.Node == a.node || (al.Node == "" && b.Affinity == a.node) {
				u.inUse++
			}
		}
	}
	a.mu.Unlock()
	for pool, u := range use {
		gauge(descIPAMInUse, float64(u.inUse), pool)
		gauge(descIPAMBlocks, float64(u.blocks), pool)
		gauge(descIPAMBlockSize, float64(u.blockAddrs), pool)
		if u.size > 0 {
			gauge(descPoolSize, float64(u.size), pool)
			gauge(descPoolUsed, float64(u.allocated), pool)
		}
	}
}

// prefixSize is the number of addresses in p, capped where a float64
// stops being exact (an IPv6 /64 pool is "a lot").
func prefixSize(p netip.Prefix) int {
	bits := p.Addr().BitLen() - p.Bits()
	if bits > 52 {
		bits = 52
	}
	return 1 << bits
}

// bgpStatusTimeout bounds the speaker query of one scrape.
const bgpStatusTimeout = 2 * time.Second

var bgpStates = []bgp.SessionState{bgp.StateIdle, bgp.StateConnect, bgp.StateActive, bgp.StateOpenSent, bgp.StateOpenConfirm, bgp.StateEstablished}

// collectBGP reads the sessions through the Speaker's status call; every
// state is reported (0 when no session is in it) so that alerts on
// calyx_bgp_sessions{state="established"} see a 0, not a gap.
func (c *stateCollector) collectBGP(gauge func(*prometheus.Desc, float64, ...string)) {
	a := c.a
	a.mu.Lock()
	started := a.bgpStarted
	a.mu.Unlock()
	var peers []bgp.PeerStatus
	if started && a.speaker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), bgpStatusTimeout)
		peers, _ = a.speaker.PeerStatus(ctx)
		cancel()
	}
	count := map[bgp.SessionState]int{}
	for _, p := range peers {
		count[p.State]++
		peer := p.Address.String()
		gauge(descBGPUp, boolFloat(p.State == bgp.StateEstablished), peer, strings.ToLower(p.Type.String()))
		gauge(descBGPReceived, float64(p.PrefixesReceived), peer)
		gauge(descBGPAccepted, float64(p.PrefixesAccepted), peer)
		gauge(descBGPAdvertised, float64(p.PrefixesAdvertised), peer)
	}
	for _, s := range bgpStates {
		gauge(descBGPSessions, float64(count[s]), strings.ToLower(string(s)))
	}
	if n := count[bgp.StateUnknown]; n > 0 {
		gauge(descBGPSessions, float64(n), "unknown")
	}
}
