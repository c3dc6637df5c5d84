package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// soakSample is one look at one process.
type soakSample struct {
	At         time.Time
	PID        int
	RSS        int64   // bytes, from /proc/PID/status VmRSS
	Goroutines float64 // go_goroutines from the agent's /metrics (-1: not read)
	FDs        float64 // process_open_fds (-1: not read)
	LocalEPs   float64 // calyx_local_endpoints (-1: not read)
}

// soakSampler samples every agent (and etcd and BIRD) now and then, and
// sums the agents' CNI latency histograms across restarts.
type soakSampler struct {
	l *lab.Lab

	mu      sync.Mutex
	samples map[string][]soakSample // by process name: agent-host1, etcd, bird
	hists   map[string]*soakHist    // by verb, summed over every agent process
	last    map[string]soakScrape   // by host: the previous scrape's buckets
	etcdDB  []float64               // etcd_mvcc_db_total_size_in_bytes
	errs    int
}

type soakScrape struct {
	pid     int
	buckets map[string]float64 // "verb le" -> cumulative count
}

func newSoakSampler(l *lab.Lab) *soakSampler {
	return &soakSampler{l: l, samples: map[string][]soakSample{}, hists: map[string]*soakHist{}, last: map[string]soakScrape{}}
}

func (s *soakSampler) run(ctx context.Context, every time.Duration) {
	for {
		s.sampleAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func (s *soakSampler) sampleAll(ctx context.Context) {
	for _, p := range s.l.Processes() {
		if !p.Alive() {
			continue
		}
		smp := soakSample{At: time.Now(), PID: p.PID, RSS: soakRSS(p.PID), Goroutines: -1, FDs: -1, LocalEPs: -1}
		if host, ok := strings.CutPrefix(p.Name, "agent-"); ok {
			if m, err := soakScrapeMetrics(ctx, s.l, host, "127.0.0.1:9091"); err == nil {
				smp.Goroutines, smp.FDs, smp.LocalEPs = m.value("go_goroutines"), m.value("process_open_fds"), m.value("calyx_local_endpoints")
				s.addHist(host, p.PID, m)
			} else {
				s.mu.Lock()
				s.errs++
				s.mu.Unlock()
			}
		}
		s.mu.Lock()
		s.samples[p.Name] = append(s.samples[p.Name], smp)
		s.mu.Unlock()
	}
	if m, err := soakScrapeMetrics(ctx, s.l, "etcd", lab.EtcdMetricsAddr); err == nil {
		s.mu.Lock()
		s.etcdDB = append(s.etcdDB, m.value("etcd_mvcc_db_total_size_in_bytes"))
		s.mu.Unlock()
	}
}

// scrapeHost takes the histogram of host's agent right before it stops, so
// that little of it is lost with the process.
func (s *soakSampler) scrapeHost(ctx context.Context, host string) {
	for _, p := range s.l.Processes() {
		if p.Name == "agent-"+host && p.Alive() {
			if m, err := soakScrapeMetrics(ctx, s.l, host, "127.0.0.1:9091"); err == nil {
				s.addHist(host, p.PID, m)
			}
		}
	}
}

// addHist adds what the agent's CNI histogram gained since the previous
// scrape; a new process (or a counter that went down) starts from zero.
func (s *soakSampler) addHist(host string, pid int, m soakMetrics) {
	cur := map[string]float64{}
	for _, smp := range m {
		if smp.name != "calyx_cni_request_duration_seconds_bucket" {
			continue
		}
		cur[smp.labels["verb"]+" "+smp.labels["le"]] = smp.value
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.last[host]
	reset := prev.pid != pid
	for k, v := range cur {
		if v < prev.buckets[k] {
			reset = true
		}
	}
	for k, v := range cur {
		d := v
		if !reset {
			d -= prev.buckets[k]
		}
		verb, le, _ := strings.Cut(k, " ")
		h := s.hists[verb]
		if h == nil {
			h = &soakHist{counts: map[float64]float64{}}
			s.hists[verb] = h
		}
		bound := float64(1e18) // +Inf
		if le != "+Inf" {
			bound, _ = strconv.ParseFloat(le, 64)
		}
		h.counts[bound] += d
	}
	s.last[host] = soakScrape{pid: pid, buckets: cur}
}

func soakRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return -1
}

// soakMetric is one line of the Prometheus text format.
type soakMetric struct {
	name   string
	labels map[string]string
	value  float64
}

type soakMetrics []soakMetric

func (m soakMetrics) value(name string) float64 {
	for _, s := range m {
		if s.name == name {
			return s.value
		}
	}
	return -1
}

// soakScrapeMetrics GETs /metrics from addr inside target's namespace.
func soakScrapeMetrics(ctx context.Context, l *lab.Lab, target, addr string) (soakMetrics, error) {
	body, err := l.HTTPGet(ctx, target, addr, "/metrics")
	if err != nil {
		return nil, err
	}
	return soakParseMetrics(bytes.NewReader(body))
}

// soakParseMetrics reads the Prometheus text format: name{k="v",...} value.
func soakParseMetrics(r io.Reader) (soakMetrics, error) {
	var out soakMetrics
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		m := soakMetric{name: line[:sp], value: v, labels: map[string]string{}}
		if i := strings.IndexByte(m.name, '{'); i >= 0 {
			for _, kv := range strings.Split(strings.TrimSuffix(m.name[i+1:], "}"), ",") {
				if k, val, ok := strings.Cut(kv, "="); ok {
					m.labels[k] = strings.Trim(val, `"`)
				}
			}
			m.name = m.name[:i]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// soakHist is a cumulative histogram: upper bound (seconds) -> count.
type soakHist struct{ counts map[float64]float64 }

// quantile interpolates linearly inside the bucket that holds rank q.
func (h *soakHist) quantile(q float64) (time.Duration, bool) {
	if h == nil {
		return 0, false
	}
	bounds := make([]float64, 0, len(h.counts))
	for b := range h.counts {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	total := h.counts[bounds[len(bounds)-1]]
	if total == 0 {
		return 0, false
	}
	rank, lo, below := q*total, 0.0, 0.0
	for _, b := range bounds {
		c := h.counts[b]
		if c >= rank {
			if b >= 1e18 {
				return time.Duration(lo * float64(time.Second)), false // beyond the last bound
			}
			frac := 0.0
			if c > below {
				frac = (rank - below) / (c - below)
			}
			return time.Duration((lo + frac*(b-lo)) * float64(time.Second)), true
		}
		lo, below = b, c
	}
	return 0, false
}

func (h *soakHist) total() float64 {
	if h == nil {
		return 0
	}
	return h.counts[1e18]
}
