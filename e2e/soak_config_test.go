package e2e

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// soakConfig is what one soak run does; every knob has an environment
// variable so that a long run can be shaped without editing the test.
type soakConfig struct {
	Duration time.Duration // CALYX_SOAK_DURATION (default 10m)
	Seed     uint64        // CALYX_SOAK_SEED (default: the clock); printed, so a run can be replayed
	// Rate is the churn's ADD+DEL operations per second, all hosts together
	// (CALYX_SOAK_RATE, default 10).
	Rate float64
	// MaxChurned bounds the churned workloads alive at once
	// (CALYX_SOAK_MAX_ALIVE, default 30); the churn hovers around half.
	MaxChurned int
	// RestartEvery is the period of agent restarts (SIGTERM + start):
	// 2 minutes, or a third of a shorter run (CALYX_SOAK_RESTART_EVERY).
	RestartEvery time.Duration
	// CheckEvery is the period of the invariant checks (churn pauses).
	CheckEvery time.Duration
	// PolicyEvery is the period of the policy toggles (apply, delete, ...).
	PolicyEvery time.Duration
	// SampleEvery is the period of the RSS, goroutine and metrics samples.
	SampleEvery time.Duration
	// Warmup is how long samples are ignored for the growth verdict.
	Warmup time.Duration
	// Converge bounds how long a check waits for the agents' asynchronous
	// loops (policy, routes) to reach the state the churn left.
	Converge time.Duration
	// GCInterval and GCGrace are given to the agents (--ipam-gc-*), so
	// that the garbage collector runs, and races the churn, during the
	// soak. An allocation leaked by a crash must be gone after
	// GCGrace+GCInterval.
	GCInterval, GCGrace time.Duration
	// Resync is the agents' --resync-interval: full kernel re-reads race
	// the churn too.
	Resync time.Duration
}

func soakConfigFromEnv() (soakConfig, error) {
	c := soakConfig{
		Duration:    10 * time.Minute,
		Seed:        uint64(time.Now().UnixNano()),
		Rate:        10,
		MaxChurned:  30,
		SampleEvery: 10 * time.Second,
		Converge:    20 * time.Second,
		GCInterval:  20 * time.Second,
		GCGrace:     60 * time.Second,
		Resync:      30 * time.Second,
	}
	if v := os.Getenv("CALYX_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 30*time.Second {
			return c, fmt.Errorf("CALYX_SOAK_DURATION=%q: want a duration of at least 30s (e.g. 60s, 10m)", v)
		}
		c.Duration = d
	}
	if v := os.Getenv("CALYX_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("CALYX_SOAK_SEED=%q: want an unsigned integer", v)
		}
		c.Seed = s
	}
	if v := os.Getenv("CALYX_SOAK_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 || r > 100 {
			return c, fmt.Errorf("CALYX_SOAK_RATE=%q: want operations per second in (0, 100]", v)
		}
		c.Rate = r
	}
	if v := os.Getenv("CALYX_SOAK_MAX_ALIVE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 || n > 150 {
			return c, fmt.Errorf("CALYX_SOAK_MAX_ALIVE=%q: want 2 to 150", v)
		}
		c.MaxChurned = n
	}
	c.RestartEvery = min(2*time.Minute, c.Duration/3)
	if v := os.Getenv("CALYX_SOAK_RESTART_EVERY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 15*time.Second {
			return c, fmt.Errorf("CALYX_SOAK_RESTART_EVERY=%q: want a duration of at least 15s", v)
		}
		c.RestartEvery = d
	}
	c.CheckEvery = min(30*time.Second, c.Duration/4)
	c.PolicyEvery = min(30*time.Second, c.Duration/6)
	// Growth is judged after the first fifth of the run (at least a minute,
	// at most half of it): by then the churn is at its steady state.
	c.Warmup = min(max(time.Minute, c.Duration/5), c.Duration/2)
	return c, nil
}

// agentArgs are appended to every agent's command line.
func (c soakConfig) agentArgs() []string {
	return []string{
		"--ipam-gc-interval=" + c.GCInterval.String(),
		"--ipam-gc-grace=" + c.GCGrace.String(),
		"--resync-interval=" + c.Resync.String(),
	}
}
