package lab

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash tests run Up in a child process (this test binary again) that
// stops after a chosen step, and kill it with SIGKILL: the state file then
// lists some of what exists, like after a real crash.
const (
	envHelperDir  = "CALYX_LAB_TEST_HELPER_DIR"
	envHelperStep = "CALYX_LAB_TEST_HELPER_STEP"
	helperReady   = "helper-stopped"
)

// TestHelperUpThenHang is not a test: it is the child of the crash tests.
func TestHelperUpThenHang(t *testing.T) {
	dir := os.Getenv(envHelperDir)
	if dir == "" {
		t.Skip("helper process for the crash tests")
	}
	stopAt := os.Getenv(envHelperStep)
	testHookAfterStep = func(step string) {
		if step == stopAt {
			_ = os.WriteFile(dir+"/"+helperReady, nil, 0o644)
			select {} // wait to be killed
		}
	}
	_, err := Up(context.Background(), Options{Dir: dir, Hosts: 2, SkipAgents: true, Peer: os.Getenv("CALYX_LAB_TEST_HELPER_PEER")})
	t.Fatalf("Up returned (%v) instead of hanging at %q", err, stopAt)
}

// crashUp starts the helper, waits for it to reach step, kills it and
// returns the state it left.
func crashUp(t *testing.T, dir, step, peer string) *State {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperUpThenHang$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperDir+"="+dir, envHelperStep+"="+step, "CALYX_LAB_TEST_HELPER_PEER="+peer)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(60 * time.Second)
	for {
		if _, err := os.Stat(dir + "/" + helperReady); err == nil {
			break
		}
		select {
		case err := <-exited:
			_ = DownDir(dir, false, nil)
			t.Fatalf("helper exited early (%v): %s", err, out.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			_ = DownDir(dir, false, nil)
			t.Fatalf("helper did not reach step %q: %s", step, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	st, err := loadState(dir)
	if err != nil {
		_ = DownDir(dir, false, nil)
		t.Fatalf("state after the crash: %v", err)
	}
	return st
}

// TestDownAfterCrash: a lab whose maker was killed half way is removed
// completely by DownDir, whether its state file survived or not; and Up
// refuses to build over its leftovers.
func TestDownAfterCrash(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		name      string
		step      string
		loseState bool
	}{
		{"state kept", "hosts", false},
		{"state lost", "hosts", true},
		{"state damaged", "etcd", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Cleanup(func() { _ = DownDir(dir, false, nil) })
			st := crashUp(t, dir, c.step, "")
			etcd, ok := st.proc(EtcdMemberName(1))
			if !ok || !etcd.alive() {
				t.Fatalf("after the crash etcd should still run: %+v", st.Processes)
			}
			left, _ := labNamespaces(context.Background(), Prefix(dir))
			if len(left) < 2 {
				t.Fatalf("after the crash the namespaces should still exist: %v", left)
			}
			_, err := Up(context.Background(), Options{Dir: dir, SkipAgents: true})
			if err == nil || !strings.Contains(err.Error(), "calyx-lab down") {
				t.Errorf("Up over a crashed lab: want an error asking for down, got %v", err)
			}
			switch {
			case c.loseState:
				os.Remove(statePath(dir))
			case c.name == "state damaged":
				os.WriteFile(statePath(dir), []byte(`{"version": 1, "processes": [`), 0o644)
			}
			if err := DownDir(dir, false, testLogger(t)); err != nil {
				t.Fatalf("down after the crash: %v", err)
			}
			assertNoLeftovers(t, Prefix(dir), st.Processes)
			if err := DownDir(dir, false, nil); err != nil {
				t.Errorf("second down: %v", err)
			}
		})
	}
}

// TestUpInterrupted: cancelling Up's context (Ctrl-C in calyx-lab) leaves
// nothing behind.
func TestUpInterrupted(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var procs []Proc
	testHookAfterStep = func(step string) {
		if step == "etcd" {
			st, _ := loadState(dir)
			procs = st.Processes
			cancel()
		}
	}
	defer func() { testHookAfterStep = nil }()
	_, err := Up(ctx, Options{Dir: dir, Hosts: 2, SkipAgents: true, Logger: testLogger(t)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Up after cancel: want context.Canceled, got %v", err)
	}
	if len(procs) == 0 {
		t.Fatal("the hook saw no process: the test did not interrupt a half-built lab")
	}
	assertNoLeftovers(t, Prefix(dir), procs)
	if _, err := os.Stat(statePath(dir)); !os.IsNotExist(err) {
		t.Errorf("state file left after an interrupted up: %v", err)
	}
}

// TestUpRefusesBadOptions: errors name the option.
func TestUpRefusesBadOptions(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Hosts: 500}, "--hosts"},
		{Options{Peer: "frr"}, "--peer"},
		{Options{Hosts: 2, Reflectors: 3}, "--reflectors"},
		{Options{Pool: "10.244.0.1/16"}, "host bits"},
		{Options{Pool: "198.18.0.0/16"}, "fabric"},
		{Options{SkipAgents: true, Workloads: 1}, "workloads need agents"},
		{Options{Dir: "/tmp/" + strings.Repeat("x", 100)}, "too long"},
	} {
		_, err := Up(context.Background(), c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Up(%+v): want an error with %q, got %v", c.o, c.want, err)
		}
	}
}
