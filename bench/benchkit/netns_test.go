package benchkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// netnsInode identifies the network namespace of the calling thread.
func netnsInode(t *testing.T) uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Error(err)
	}
	return st.Ino
}

// InNetns runs fn inside the namespace, several calls at once each on a
// thread of its own, and never moves the caller's thread.
func TestInNetnsAndNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	names := []string{"benchkit-" + hex.EncodeToString(b) + "-a", "benchkit-" + hex.EncodeToString(b) + "-b"}
	t.Cleanup(func() {
		if err := DelNetns(names); err != nil {
			t.Error(err)
		}
	})
	if err := AddNetns(context.Background(), names); err != nil {
		t.Fatal(err)
	}
	var want unix.Stat_t
	if err := unix.Stat(NetnsPath(names[0]), &want); err != nil {
		t.Fatal(err)
	}
	// Every thread but the ones InNetns locks stays in the test's own
	// namespace, whichever thread the test's goroutine runs on.
	before := netnsInode(t)

	const n = 4
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	inodes := make([]uint64, n)
	errs := make([]error, n)
	for i := range n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			errs[i] = InNetns(names[0], func() error {
				ready.Done()
				<-start // all n inside at the same time
				inodes[i] = netnsInode(t)
				return nil
			})
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("call %d: %v", i, errs[i])
		}
		if inodes[i] != want.Ino {
			t.Errorf("call %d ran in namespace inode %d, want %d (%s)", i, inodes[i], want.Ino, names[0])
		}
	}
	if after := netnsInode(t); after != before {
		t.Errorf("the caller's namespace changed from %d to %d", before, after)
	}

	sentinel := errors.New("from fn")
	if err := InNetns(names[1], func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("fn's error not returned: %v", err)
	}
	if err := InNetns(names[0]+"-absent", func() error { return nil }); err == nil {
		t.Error("a missing namespace gave no error")
	}

	if err := DelNetns(append([]string{names[0] + "-absent"}, names...)); err != nil {
		t.Fatalf("DelNetns: %v", err)
	}
	for _, name := range names {
		if _, err := os.Stat(NetnsPath(name)); err == nil {
			t.Errorf("%s still exists after DelNetns", name)
		}
	}
}
