package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/internal/netnstest"
	"github.com/calyx-net/calyx/internal/testutil"
)

// The main goroutine keeps the main thread, so Do's goroutines never run on
// it: the runtime cannot end the main thread, it parks it, and the tests
// below could not tell a discarded thread from one given back.
func init() { runtime.LockOSThread() }

// threadNetns is the namespace (inode) of the calling thread.
func threadNetns(t *testing.T) uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadsIn counts this process's threads that are in the namespace.
func threadsIn(t *testing.T, ino uint64) int {
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range tasks {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Ino == ino {
			n++
		}
	}
	return n
}

// threadEnds waits until the thread tid has ended. The main thread cannot
// end: the runtime parks it for good instead (it never runs a goroutine
// again), so it is let be.
func threadEnds(t *testing.T, tid int, what string) {
	t.Helper()
	if tid == os.Getpid() {
		t.Logf("%s ran on the main thread, which the runtime parks instead of ending", what)
		return
	}
	testutil.Eventually(t, 2*time.Second, what+" ends", func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err == nil {
			return errors.New("the thread is still alive")
		}
		return nil
	})
}

func nsInode(t *testing.T, path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestDoRunsOnItsOwnThread: fn runs in the namespace on a thread of its own,
// several calls at once; the caller's thread never moves, and no thread of
// the process is left inside once the calls return.
func TestDoRunsOnItsOwnThread(t *testing.T) {
	ns := netnstest.New(t, "nsdo")
	want := nsInode(t, ns.Path)
	before := threadNetns(t)

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
			errs[i] = Do(ns.Path, func() error {
				ready.Done()
				<-start // all n inside at the same time
				var st unix.Stat_t
				err := unix.Stat("/proc/thread-self/ns/net", &st)
				inodes[i] = st.Ino
				return err
			})
		}()
	}
	ready.Wait()
	if got := threadsIn(t, want); got != n {
		t.Errorf("%d threads inside during %d concurrent calls", got, n)
	}
	close(start)
	done.Wait()
	for i := range n {
		if errs[i] != nil || inodes[i] != want {
			t.Errorf("call %d ran in namespace %d (err %v), want %d", i, inodes[i], errs[i], want)
		}
	}
	if after := threadNetns(t); after != before {
		t.Errorf("the caller's namespace changed from %d to %d", before, after)
	}
	if got := threadsIn(t, want); got != 0 {
		t.Errorf("%d threads still inside after Do returned", got)
	}

	sentinel := errors.New("from fn")
	if err := Do(ns.Path, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("fn's error not returned: %v", err)
	}
}

// TestDoPanicKillsTheThread: a panic in fn reaches the caller, and the
// thread that ran it ends instead of going back to the pool.
func TestDoPanicKillsTheThread(t *testing.T) {
	ns := netnstest.New(t, "nspanic")
	before := threadNetns(t)
	tid := 0
	got := func() (r any) {
		defer func() { r = recover() }()
		_ = Do(ns.Path, func() error { tid = unix.Gettid(); panic("boom") })
		return nil
	}()
	if got != "boom" {
		t.Fatalf("recovered %v, want the panic of fn", got)
	}
	if after := threadNetns(t); after != before {
		t.Errorf("the caller's namespace changed from %d to %d", before, after)
	}
	threadEnds(t, tid, "the panicked thread")
	if err := Do(ns.Path, func() error { return nil }); err != nil {
		t.Errorf("Do after a panic: %v", err)
	}
}

// TestDoFailedReturnKillsTheThread makes the way back fail: the error says
// so, and the thread stuck inside dies with its goroutine rather than serve
// other goroutines in the wrong namespace.
func TestDoFailedReturnKillsTheThread(t *testing.T) {
	ns := netnstest.New(t, "nsback")
	calls := 0
	setns = func(h vns.NsHandle) error {
		calls++
		if calls == 2 { // the way back
			return unix.EPERM
		}
		return vns.Set(h)
	}
	t.Cleanup(func() { setns = vns.Set })
	tid := 0
	err := Do(ns.Path, func() error { tid = unix.Gettid(); return nil })
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("Do = %v, want the failure of the way back", err)
	}
	threadEnds(t, tid, "the stuck thread")
}

func TestMissingNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	err := Do("/run/netns/cxt-no-such-namespace", func() error { return nil })
	if !errors.Is(err, ErrNotExist) {
		t.Fatalf("Do on a missing namespace: %v, want ErrNotExist", err)
	}
	if Exists("/run/netns/cxt-no-such-namespace") {
		t.Fatalf("Exists reports a missing namespace")
	}
	if _, err := os.Stat("/run/netns/cxt-no-such-namespace"); err == nil {
		t.Fatal("the namespace exists after all")
	}
}

// TestEmptyPathRunsInPlace: the agent's own namespace needs no thread.
func TestEmptyPathRunsInPlace(t *testing.T) {
	ran := false
	if err := Do("", func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do(\"\") ran=%v err=%v", ran, err)
	}
}
