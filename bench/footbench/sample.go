package footbench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/bench/bgpbench"
	"github.com/calyx-net/calyx/routes/netns"
)

// idle is what one window of sampling found.
type idle struct {
	rssFirst, rssMax float64 // MiB
	cpuSeconds       float64
	cpuPct           float64 // of one core
	samples          int
	// split is the last sample's /proc/PID/status breakdown of the RSS:
	// anonymous memory (heap, stacks) and file pages (the binary's text).
	split string
}

// sample reads the agent's RSS every second for window and its CPU time
// at both ends of it.
func sample(ctx context.Context, pid int, window time.Duration) (idle, error) {
	var s idle
	cpu0, err := bgpbench.CPUSeconds(pid)
	if err != nil {
		return s, err
	}
	start := time.Now()
	for {
		rss, err := bgpbench.RSSMiB(pid)
		if err != nil {
			return s, err
		}
		if s.samples == 0 {
			s.rssFirst = rss
		}
		s.rssMax = max(s.rssMax, rss)
		s.samples++
		left := window - time.Since(start)
		if left <= 0 {
			break
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(min(time.Second, left)):
		}
	}
	cpu1, err := bgpbench.CPUSeconds(pid)
	if err != nil {
		return s, err
	}
	s.cpuSeconds = cpu1 - cpu0
	s.split = rssSplit(pid)
	s.cpuPct = 100 * s.cpuSeconds / time.Since(start).Seconds()
	return s, nil
}

// metricsAddr is where the lab's agents serve /metrics, inside their host
// namespace (e2e/lab.AgentArgv).
const metricsAddr = "127.0.0.1:9091"

// agentMemStats reads the Go runtime's memory figures from the agent's
// /metrics: what of the RSS is heap in use, and what the runtime holds.
// The connection is made on a thread inside the host namespace.
func agentMemStats(hostNetns string) (string, error) {
	var conn net.Conn
	if err := netns.Do(benchkit.NetnsPath(hostNetns), func() error {
		var err error
		conn, err = net.DialTimeout("tcp", metricsAddr, 5*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", metricsAddr); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	want := []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes", "go_goroutines"}
	got := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				got[f[0]] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	var parts []string
	for _, k := range want {
		v, ok := got[k]
		switch {
		case !ok:
			parts = append(parts, k+" missing")
		case strings.HasSuffix(k, "_bytes"):
			parts = append(parts, fmt.Sprintf("%s %.1f MiB", strings.TrimPrefix(k, "go_memstats_"), v/(1<<20)))
		default:
			parts = append(parts, fmt.Sprintf("%s %.0f", strings.TrimPrefix(k, "go_"), v))
		}
	}
	return "Go runtime: " + strings.Join(parts, ", "), nil
}

// rssSplit is the RssAnon, RssFile and RssShmem lines of /proc/PID/status.
func rssSplit(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "RSS split unavailable: " + err.Error()
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(k, "Rss") {
			parts = append(parts, k+" "+strings.Join(strings.Fields(v), " "))
		}
	}
	return strings.Join(parts, ", ")
}
