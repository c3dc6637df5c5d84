package scalebench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/calyx-net/calyx/e2e/lab"
)

// samples are the values of a Prometheus text page, by series
// ("name{labels}", as written).
type samples map[string]float64

// scrape reads http://addr/metrics from inside the lab target's namespace
// (etcd's and the agents' metrics listen on their namespace's loopback).
func scrape(ctx context.Context, l *lab.Lab, target, addr string) (samples, error) {
	body, err := l.HTTPGet(ctx, target, addr, "/metrics")
	if err != nil {
		return nil, err
	}
	out := samples{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// sum adds the series of metric name whose labels contain every one of
// match (`key="value"` strings).
func (s samples) sum(name string, match ...string) float64 {
	var total float64
	for series, v := range s {
		base, labels, _ := strings.Cut(series, "{")
		if base != name {
			continue
		}
		ok := true
		for _, m := range match {
			if !strings.Contains(labels, m) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// label is the value of key in a series' labels ("" if absent).
func label(series, key string) string {
	_, rest, ok := strings.Cut(series, key+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// rssBytes is a process's resident set (VmRSS).
func rssBytes(pid int) (float64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}
