package agent

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestAttachmentLocksSerializeOneKey(t *testing.T) {
	var l attachmentLocks
	unlockA, err := l.lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is independent.
	unlockB, err := l.lock(context.Background(), "b")
	if err != nil {
		t.Fatalf("locking another key while a is held: %v", err)
	}
	unlockB()

	// The same key waits, and gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.lock(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock of a held key: %v, want DeadlineExceeded", err)
	}

	got := make(chan func(), 1)
	go func() {
		u, err := l.lock(context.Background(), "a")
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("a waiter got the lock while it was held")
	case <-time.After(20 * time.Millisecond):
	}
	unlockA()
	select {
	case u := <-got:
		u()
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not get the lock after unlock")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.held) != 0 {
		t.Errorf("%d lock entries left after every holder unlocked", len(l.held))
	}
}
