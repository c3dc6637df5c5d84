// Package testutil holds the few helpers every package's tests share.
package testutil

import (
	"errors"
	"testing"
	"time"
)

// Eventually polls cond until it returns nil and returns how long that took;
// when within passes first, it fails the test with what and cond's last
// error. Polling starts at 10 ms and backs off to 100 ms, so quick
// conditions are seen quickly and slow ones (a command per poll) cost
// little.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	start := time.Now()
	pause := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			tb.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// Holds adapts a boolean condition to Eventually.
func Holds(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}

var errNotYet = errors.New("condition not met yet")
