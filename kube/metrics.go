package kube

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controllers' Prometheus metrics.
type Metrics struct {
	reg        *prometheus.Registry
	reconciles *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		reg: reg,
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "calyx_kube_reconciles_total",
			Help: "Reconciles by controller and result (ok, error)."}, []string{"controller", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "calyx_kube_reconcile_seconds",
			Help: "Time one reconcile took, by controller.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}, []string{"controller"}),
	}
	reg.MustRegister(m.reconciles, m.duration)
	return m
}

func (m *Metrics) observe(ctrl string, start time.Time, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reconciles.WithLabelValues(ctrl, result).Inc()
	m.duration.WithLabelValues(ctrl).Observe(time.Since(start).Seconds())
}

// queues exports each work queue's depth.
func (m *Metrics) queues(c *Controllers) {
	for name, q := range c.queues {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "calyx_kube_queue_depth",
			Help: "Keys waiting in a controller's work queue.", ConstLabels: prometheus.Labels{"controller": name}},
			func() float64 { return float64(q.q.Len()) }))
	}
}
