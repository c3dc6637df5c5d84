package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/heartbeat"
	"github.com/calyx-net/calyx/internal/testutil"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// livez asks the health handler built on g what /livez says.
func livez(g *group) (int, string) {
	rec := httptest.NewRecorder()
	healthHandler(g.problems, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/livez", nil))
	return rec.Code, rec.Body.String()
}

// Stop unwinds in reverse order of start and waits for each loop before
// going on, so a resource closed last is never closed under a loop.
func TestGroupStopsInReverseOrderAndWaits(t *testing.T) {
	g := newGroup(context.Background(), quietLog)
	var mu sync.Mutex
	var order []string
	note := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	var closed atomic.Bool
	g.OnStop("store", func() { closed.Store(true); note("store closed") })
	useStore := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			for {
				if closed.Load() {
					return fmt.Errorf("%s: the store was closed under me", name)
				}
				select {
				case <-ctx.Done():
					// Still using the store a little after cancellation.
					time.Sleep(20 * time.Millisecond)
					if closed.Load() {
						return fmt.Errorf("%s: the store was closed before I returned", name)
					}
					note(name + " stopped")
					return nil
				case <-time.After(time.Millisecond):
				}
			}
		}
	}
	g.Go("first", 0, useStore("first"))
	g.Go("second", 0, useStore("second"))
	if code, body := livez(g); code != http.StatusOK {
		t.Fatalf("/livez with every loop running: %d %s", code, body)
	}
	g.stop()
	want := "second stopped, first stopped, store closed"
	if got := strings.Join(order, ", "); got != want {
		t.Errorf("stop order: %s, want %s", got, want)
	}
	for _, s := range g.steps {
		if s.close == nil && s.err != nil {
			t.Errorf("loop %s: %v", s.name, s.err)
		}
	}
	// Nothing starts after stop; a closer registered late runs at once.
	ran := false
	g.Go("late", 0, func(context.Context) error { ran = true; return nil })
	lateClosed := false
	g.OnStop("late", func() { lateClosed = true })
	if ran || !lateClosed {
		t.Errorf("after stop: loop ran %v, closer ran %v", ran, lateClosed)
	}
}

// A loop that returns before stop turns /livez red, naming it and why.
func TestGroupDeadLoopFailsLivez(t *testing.T) {
	g := newGroup(context.Background(), quietLog)
	defer g.stop()
	g.Go("steady", 0, func(ctx context.Context) error { <-ctx.Done(); return nil })
	g.Go("syncer", 0, func(context.Context) error { return errors.New("boom") })
	g.Go("quitter", 0, func(context.Context) error { return nil })
	testutil.Eventually(t, 5*time.Second, "/livez red", func() error {
		code, body := livez(g)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "loop syncer stopped: boom") || !strings.Contains(body, "loop quitter stopped: returned without error") {
			return fmt.Errorf("%d %q", code, body)
		}
		if strings.Contains(body, "steady") {
			return fmt.Errorf("a running loop reported: %q", body)
		}
		return nil
	})
}

// A loop that stops beating is reported stalled once its deadline passes,
// and healthy again when it beats.
func TestGroupStalledLoop(t *testing.T) {
	g := newGroup(context.Background(), quietLog)
	defer g.stop()
	var stall atomic.Bool
	resume := make(chan struct{})
	g.Go("beating", 200*time.Millisecond, func(ctx context.Context) error {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
				if stall.Load() {
					select {
					case <-resume:
						stall.Store(false)
					case <-ctx.Done():
						return nil
					}
				}
				heartbeat.Beat(ctx)
			}
		}
	})
	g.Go("silent", 0, func(ctx context.Context) error { <-ctx.Done(); return nil }) // no deadline, never beats
	time.Sleep(300 * time.Millisecond)
	if code, body := livez(g); code != http.StatusOK {
		t.Fatalf("/livez with a beating loop: %d %s", code, body)
	}
	stall.Store(true)
	testutil.Eventually(t, 5*time.Second, "stalled loop reported", func() error {
		if code, body := livez(g); code != http.StatusServiceUnavailable || !strings.Contains(body, "loop beating stalled") {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})
	close(resume)
	testutil.Eventually(t, 5*time.Second, "healthy after beating again", func() error {
		if code, body := livez(g); code != http.StatusOK {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})
}

// Once stop has begun, loops ending are not problems.
func TestGroupStoppingIsNotAProblem(t *testing.T) {
	g := newGroup(context.Background(), quietLog)
	g.Go("loop", time.Millisecond, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	g.stop()
	if p := g.problems(); len(p) != 0 {
		t.Errorf("problems after stop: %v", p)
	}
}

// An ADD's steps are undone last first, and one failing undo does not
// stop the others.
func TestUndoStackUnwindsInReverse(t *testing.T) {
	var u undoStack
	var order []string
	for _, name := range []string{"ipam", "overlay", "veth", "endpoint"} {
		u.push(name, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Errorf("undo %s without a deadline", name)
			}
			order = append(order, name)
			if name == "veth" {
				return errors.New("link busy")
			}
			return nil
		})
	}
	u.unwind(quietLog)
	if got := strings.Join(order, ","); got != "endpoint,veth,overlay,ipam" {
		t.Errorf("undo order %s", got)
	}
	u.unwind(quietLog) // nothing left to undo
	if len(order) != 4 {
		t.Errorf("a second unwind undid again: %v", order)
	}
}
