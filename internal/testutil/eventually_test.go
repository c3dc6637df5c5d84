package testutil

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEventuallyReturnsOnceTrue(t *testing.T) {
	n := 0
	took := Eventually(t, time.Second, "third poll", func() error {
		n++
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 || took <= 0 {
		t.Fatalf("polled %d times in %v, want 3 polls", n, took)
	}
}

// fakeTB records Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = format
	for _, a := range args {
		if e, ok := a.(error); ok {
			f.msg += " " + e.Error()
		}
	}
	panic(f)
}

func TestEventuallyFailsWithTheLastError(t *testing.T) {
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				panic(r)
			}
		}()
		Eventually(f, 30*time.Millisecond, "never", Holds(func() bool { return false }))
	}()
	if !strings.Contains(f.msg, "not within") || !strings.Contains(f.msg, errNotYet.Error()) {
		t.Fatalf("failure message %q lacks the deadline or the last error", f.msg)
	}
}
