package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the agent's Prometheus series (docs/agent.md lists them).
type metrics struct {
	registry       *prometheus.Registry
	cniRequests    *prometheus.CounterVec
	cniDuration    *prometheus.HistogramVec
	localEndpoints prometheus.Gauge
}

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
	}
	m.registry.MustRegister(m.cniRequests, m.cniDuration, m.localEndpoints,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "calyx_datastore_in_sync", Help: "1 once the datastore syncer is in sync."},
			func() float64 { return boolFloat(a.isSynced()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "calyx_policy_ready", Help: "1 while policy is programmed and writes succeed."},
			func() float64 { return boolFloat(a.policy.Ready() == nil) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "calyx_route_writes_total", Help: "Kernel route writes (adds, replaces, deletes) by the workload route table."},
			func() float64 { return float64(a.local.Stats().Writes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "calyx_learned_route_writes_total", Help: "Kernel route writes by the BGP-learned route table."},
			func() float64 { return float64(a.learned.Stats().Writes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "calyx_policy_chains_written_total", Help: "iptables chains written."},
			func() float64 { return float64(a.policy.Stats().ChainsWritten) }),
	)
	return m
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
