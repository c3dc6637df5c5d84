package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// soakChurn adds and deletes workloads on random hosts at a steady rate,
// with random labels, keeping the number alive bounded. It runs alone in
// its goroutine; the checks pause it to see a state that holds still.
type soakChurn struct {
	l        *lab.Lab
	fleet    *soakFleet
	rng      *rand.Rand
	rate     float64
	max      int
	cacheDir string // libcni's cache for the DEL retries
	tl       *soakTimeline

	pauseCh chan soakPause
	done    chan struct{}

	mu    sync.Mutex
	stats soakChurnStats
	seq   int
}

type soakPause struct{ paused, resume chan struct{} }

// soakChurnStats counts what the churn did and how it went.
type soakChurnStats struct {
	Ticks, AddOK, AddFailed, AddRefused, DelOK, DelFailed, DelRetries int
	OwedPaid, OwedFailed                                              int
	AddLat, DelLat                                                    soakLatencies
	Errors                                                            []string // unexpected failures, the first few
	IDMismatch                                                        string
}

func (c *soakChurn) noteError(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.tl.add("churn error: " + msg)
	if len(c.stats.Errors) < 20 {
		c.stats.Errors = append(c.stats.Errors, msg)
	}
}

func (c *soakChurn) snapshotStats() soakChurnStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Errors = append([]string(nil), c.stats.Errors...)
	return s
}

// run does one operation per tick until ctx ends.
func (c *soakChurn) run(ctx context.Context) {
	defer close(c.done)
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-c.pauseCh:
			close(p.paused)
			select {
			case <-p.resume:
			case <-ctx.Done():
				return
			}
		case <-tick.C:
			c.step(ctx)
		}
	}
}

// paused runs fn while the churn holds still (at once if it has stopped).
func (c *soakChurn) paused(fn func()) {
	p := soakPause{paused: make(chan struct{}), resume: make(chan struct{})}
	select {
	case c.pauseCh <- p:
		<-p.paused
		defer close(p.resume)
	case <-c.done:
	}
	fn()
}

// step pays one owed DEL, if any, then adds or deletes one workload. The
// chance to add falls as the number alive rises, so it hovers around half
// of max.
func (c *soakChurn) step(ctx context.Context) {
	c.mu.Lock()
	c.stats.Ticks++
	c.mu.Unlock()
	c.payOneDebt(ctx)
	alive := c.fleet.count(soakChurned)
	if alive < c.max && c.rng.Float64() >= float64(alive)/float64(c.max) {
		c.add(ctx)
		return
	}
	c.del(ctx)
}

func (c *soakChurn) randomLabels() map[string]string {
	return map[string]string{
		"soak":     "churn",
		"soak-app": []string{"a", "b", "c"}[c.rng.IntN(3)],
		"soak-gen": strconv.Itoa(c.rng.IntN(4)),
	}
}

func (c *soakChurn) nextName(prefix string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return fmt.Sprintf("%s%05d", prefix, c.seq)
}

func (c *soakChurn) add(ctx context.Context) {
	hosts := c.l.Hosts()
	host := hosts[c.rng.IntN(len(hosts))].Name
	c.addOn(ctx, c.nextName("c"), host, c.randomLabels())
}

// addOn adds one churned workload; a failure leaves a DEL owed.
func (c *soakChurn) addOn(ctx context.Context, name, host string, labels map[string]string) error {
	wasDown := c.fleet.isDown(host)
	start := time.Now()
	w, err := c.l.AddWorkload(ctx, name, host, labels)
	took := time.Since(start)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.fleet.owe(soakWL{Name: name, Host: host, ContainerID: soakContainerID(c.l.Prefix(), name), Kind: soakChurned, Labels: labels})
		switch {
		case ctx.Err() != nil:
		case wasDown || c.fleet.isDown(host):
			c.stats.AddRefused++
		default:
			c.stats.AddFailed++
			c.noteError("ADD %s on %s: %v", name, host, err)
		}
		return err
	}
	if want := soakContainerID(c.l.Prefix(), name); w.ContainerID != want && c.stats.IDMismatch == "" {
		c.stats.IDMismatch = fmt.Sprintf("the lab gave %s container ID %s, the soak derives %s: its DEL retries would miss", name, w.ContainerID, want)
	}
	c.stats.AddOK++
	c.stats.AddLat.add(start, took)
	c.fleet.add(soakFromLab(w, soakChurned))
	return nil
}

func (c *soakChurn) del(ctx context.Context) {
	cands := c.fleet.deletable()
	if len(cands) == 0 {
		return
	}
	w := cands[c.rng.IntN(len(cands))]
	start := time.Now()
	err := c.l.DelWorkload(ctx, w.Name)
	took := time.Since(start)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		switch {
		case ctx.Err() != nil:
		case c.fleet.isDown(w.Host):
			c.stats.DelRetries++ // the lab keeps it; deleted again later
		default:
			c.stats.DelFailed++
			c.noteError("DEL %s on %s: %v", w.Name, w.Host, err)
		}
		return
	}
	c.stats.DelOK++
	c.stats.DelLat.add(start, took)
	c.fleet.remove(w.Name)
}

// payOneDebt retries one owed DEL whose agent is up.
func (c *soakChurn) payOneDebt(ctx context.Context) {
	for _, w := range c.fleet.owed() {
		if c.fleet.isDown(w.Host) {
			continue
		}
		c.payDebt(ctx, w)
		return
	}
}

func (c *soakChurn) payDebt(ctx context.Context, w soakWL) error {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := soakCNIDel(dctx, c.l, c.cacheDir, w)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.stats.OwedFailed++
		return err
	}
	c.stats.OwedPaid++
	c.fleet.paid(w.Name)
	return nil
}

// payAllDebts retries every owed DEL (the churn is paused or stopped, every
// agent is up); what still fails is returned.
func (c *soakChurn) payAllDebts(ctx context.Context) []string {
	var failed []string
	for _, w := range c.fleet.owed() {
		if err := c.payDebt(ctx, w); err != nil {
			failed = append(failed, fmt.Sprintf("DEL owed for %s on %s: %v", w.Name, w.Host, err))
		}
	}
	return failed
}
