package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PingResult is one ping from a target to an address.
type PingResult struct {
	From, To string // target names (To may be a bare address)
	ToIP     string
	OK       bool
	RTT      time.Duration
	Err      error
}

var rttRE = regexp.MustCompile(`time=([0-9.]+) ms`)

// Ping sends one ICMP echo from target's namespace to ip (1 s timeout);
// ICMPv6 (ping -6) when ip is an IPv6 address.
func (l *Lab) Ping(from, toIP string) error {
	r := l.ping(context.Background(), from, toIP)
	return r.Err
}

func (l *Lab) ping(ctx context.Context, from, toIP string) PingResult {
	r := PingResult{From: from, To: toIP, ToIP: toIP}
	start := time.Now()
	argv := []string{"ping", "-n", "-c", "1", "-W", "1", toIP}
	if a, err := netip.ParseAddr(toIP); err == nil && a.Is6() {
		argv = []string{"ping", "-6", "-n", "-c", "1", "-W", "1", toIP}
	}
	out, err := l.ExecContext(ctx, from, argv...)
	if err != nil {
		r.Err = fmt.Errorf("ping %s from %s: no answer", toIP, from)
		return r
	}
	r.OK = true
	r.RTT = time.Since(start)
	if m := rttRE.FindStringSubmatch(out); m != nil {
		if ms, err := strconv.ParseFloat(m[1], 64); err == nil {
			r.RTT = time.Duration(ms * float64(time.Millisecond))
		}
	}
	return r
}

// Endpoint is a row or column of a ping matrix: a name and the address
// pings go to.
type Endpoint struct {
	Name string
	IP   string
}

// Matrix is the result of PingMatrix: Results[i][j] is Sources[i] pinging
// Targets[j]; a source does not ping itself (zero result).
type Matrix struct {
	Sources, Targets []Endpoint
	Results          [][]PingResult
}

// Failed lists the pairs that got no answer.
func (m Matrix) Failed() []PingResult {
	var out []PingResult
	for i := range m.Results {
		for j, r := range m.Results[i] {
			if m.Sources[i].Name != m.Targets[j].Name && !r.OK {
				out = append(out, r)
			}
		}
	}
	return out
}

// Endpoints lists the workloads (and with hosts, the hosts) as ping
// endpoints, in lab order, by their IPv4 address (a workload with none, by
// its first address).
func (l *Lab) Endpoints(withHosts bool) []Endpoint {
	var eps []Endpoint
	if withHosts {
		for _, h := range l.Hosts() {
			eps = append(eps, Endpoint{h.Name, h.IP})
		}
	}
	for _, w := range l.Workloads() {
		ip := w.IPv4()
		if ip == "" {
			ip = w.IP()
		}
		if ip != "" {
			eps = append(eps, Endpoint{w.Name, ip})
		}
	}
	return eps
}

// Endpoints6 lists the workloads (and with hosts, the hosts) that have an
// IPv6 address as ping endpoints by that address, in lab order. It is empty
// in an IPv4-only lab.
func (l *Lab) Endpoints6(withHosts bool) []Endpoint {
	var eps []Endpoint
	if withHosts {
		for _, h := range l.Hosts() {
			if h.IPv6 != "" {
				eps = append(eps, Endpoint{h.Name, h.IPv6})
			}
		}
	}
	for _, w := range l.Workloads() {
		if ip := w.IPv6(); ip != "" {
			eps = append(eps, Endpoint{w.Name, ip})
		}
	}
	return eps
}

// PingMatrix pings every target from every source (except itself), at most
// parallel pings at a time.
func (l *Lab) PingMatrix(ctx context.Context, sources, targets []Endpoint, parallel int) Matrix {
	if parallel < 1 {
		parallel = 8
	}
	m := Matrix{Sources: sources, Targets: targets, Results: make([][]PingResult, len(sources))}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, s := range sources {
		m.Results[i] = make([]PingResult, len(targets))
		for j, t := range targets {
			if s.Name == t.Name {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				r := l.ping(ctx, s.Name, t.IP)
				r.To = t.Name
				m.Results[i][j] = r
			}()
		}
	}
	wg.Wait()
	return m
}

// String renders the matrix: one row per source, ✓ with the round trip in
// milliseconds or ✗.
func (m Matrix) String() string {
	const cell = 9
	var b strings.Builder
	width := len("from\\to")
	for _, s := range m.Sources {
		width = max(width, len(s.Name))
	}
	fmt.Fprintf(&b, "%-*s", width+2, "from\\to")
	for _, t := range m.Targets {
		fmt.Fprintf(&b, "%-*s", cell, t.Name)
	}
	b.WriteString("\n")
	for i, s := range m.Sources {
		fmt.Fprintf(&b, "%-*s", width+2, s.Name)
		for j, t := range m.Targets {
			var c string
			switch r := m.Results[i][j]; {
			case s.Name == t.Name:
				c = "-"
			case r.OK:
				c = fmt.Sprintf("✓ %.2f", float64(r.RTT.Microseconds())/1000)
			default:
				c = "✗"
			}
			// Pad by runes: ✓ and ✗ are one column but three bytes.
			b.WriteString(c + strings.Repeat(" ", max(1, cell-len([]rune(c)))))
		}
		b.WriteString("\n")
	}
	b.WriteString(fmt.Sprintf("%d of %d pairs answered (✓ round trip in ms)\n", m.answered(), m.pairs()))
	return b.String()
}

func (m Matrix) pairs() int {
	n := 0
	for _, s := range m.Sources {
		for _, t := range m.Targets {
			if s.Name != t.Name {
				n++
			}
		}
	}
	return n
}

func (m Matrix) answered() int { return m.pairs() - len(m.Failed()) }

// Listen opens a TCP listener inside target's namespace (a workload, a
// host), for policy tests: addr is e.g. ":8080".
func (l *Lab) Listen(target, addr string) (net.Listener, error) {
	ns, err := l.Namespace(target)
	if err != nil {
		return nil, err
	}
	return listenIn(ns, addr)
}

// Dial opens a TCP connection from target's namespace to addr.
func (l *Lab) Dial(ctx context.Context, from, addr string) (net.Conn, error) {
	ns, err := l.Namespace(from)
	if err != nil {
		return nil, err
	}
	return dialerIn(ns)(ctx, addr)
}
