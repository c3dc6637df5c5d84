package e2e

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// soakLatencies keeps every sample with its start time, so that samples
// taken while the lab lock was held by an agent restart can be left out.
type soakLatencies struct {
	starts []time.Time
	took   []time.Duration
}

func (s *soakLatencies) add(start time.Time, d time.Duration) {
	s.starts = append(s.starts, start)
	s.took = append(s.took, d)
}

// without returns the samples that overlap none of the intervals.
func (s soakLatencies) without(busy []soakInterval) (kept []time.Duration, dropped int) {
	for i, st := range s.starts {
		end := st.Add(s.took[i])
		overlaps := false
		for _, b := range busy {
			if st.Before(b.to) && end.After(b.from) {
				overlaps = true
				break
			}
		}
		if overlaps {
			dropped++
			continue
		}
		kept = append(kept, s.took[i])
	}
	return kept, dropped
}

// soakQuantile is the q-quantile (nearest rank) of ds.
func soakQuantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func soakMs(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

type soakInterval struct{ from, to time.Time }

// soakTimeline is what happened when: agent restarts, kills, policy
// toggles, errors. Losses are told relative to it.
type soakTimeline struct {
	start  time.Time
	mu     sync.Mutex
	events []soakEvent
	busy   []soakInterval // when the chaos held the lab lock
}

type soakEvent struct {
	at   time.Time
	what string
}

func (tl *soakTimeline) add(what string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, soakEvent{time.Now(), what})
}

func (tl *soakTimeline) addBusy(from time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.busy = append(tl.busy, soakInterval{from, time.Now()})
}

func (tl *soakTimeline) busyIntervals() []soakInterval {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.busy)
}

// near names the last event at most window before t ("" for none).
func (tl *soakTimeline) near(t time.Time, window time.Duration) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i := len(tl.events) - 1; i >= 0; i-- {
		e := tl.events[i]
		if e.at.After(t) {
			continue
		}
		if t.Sub(e.at) <= window {
			return fmt.Sprintf("%s (+%s)", e.what, tl.offset(e.at))
		}
		break
	}
	return ""
}

func (tl *soakTimeline) offset(t time.Time) string {
	return t.Sub(tl.start).Round(100 * time.Millisecond).String()
}

func (tl *soakTimeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	for _, e := range tl.events {
		fmt.Fprintf(&b, "  +%-8s %s\n", tl.offset(e.at), e.what)
	}
	return b.String()
}
