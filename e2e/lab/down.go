package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// Down removes everything the lab made and logs what it could not; it is
// what t.Cleanup wants (t.Cleanup(lab.Down)). Calling it again does nothing.
func (l *Lab) Down() {
	if err := l.Teardown(); err != nil {
		l.log.Error("lab down", "dir", l.dir, "err", err)
	}
}

// Teardown is Down returning the error. Only the first call does the work.
func (l *Lab) Teardown() error {
	l.downOnce.Do(func() {
		lockCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		lock, err := lockDir(lockCtx, l.dir)
		cancel()
		if err != nil {
			// A lock held by a live calyx-lab: clean up anyway, the user
			// asked for it.
			l.log.Warn("lab down without the directory lock", "err", err)
		}
		defer lock.unlock()
		l.downErr = l.teardown()
	})
	return l.downErr
}

// teardown undoes the lab from its state plus whatever carries its prefix.
func (l *Lab) teardown() error {
	l.mu.Lock()
	st := l.st
	st.Processes = slices.Clone(st.Processes)
	l.mu.Unlock()
	// The file is saved after every change, so it is never behind memory;
	// it is ahead when another calyx-lab changed the lab.
	if disk, err := loadState(l.dir); err == nil {
		st = *disk
	}
	l.closeDatastore()
	err := teardownDir(l.dir, &st, l.log)
	// Wait for the reapers, so that no zombie of ours outlives Down.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		n := len(l.children)
		l.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

func (l *Lab) closeDatastore() {
	l.dsMu.Lock()
	defer l.dsMu.Unlock()
	if l.etcdClient != nil {
		l.etcdClient.Close()
		l.etcdClient, l.ds = nil, nil
	}
}

// DownDir removes the lab in dir: from its state file when there is one,
// and in any case every namespace with the lab's prefix and every process
// inside them. It is idempotent and recovers a lab whose maker crashed.
// Logs under dir/logs stay; with purge the whole directory goes.
func DownDir(dir string, purge bool, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o, err := Options{Dir: dir}.withDefaults()
	if err != nil {
		return err
	}
	dir = o.Dir
	var st *State
	if _, statErr := os.Stat(dir); statErr == nil {
		lockCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		lock, err := lockDir(lockCtx, dir)
		cancel()
		if err != nil {
			logger.Warn("lab down without the directory lock", "err", err)
		}
		defer lock.unlock()
		st, err = loadState(dir)
		if err != nil && !errors.Is(err, ErrNoLab) {
			// A damaged state: carry on by prefix.
			logger.Warn("lab state unreadable; cleaning up by name prefix", "err", err)
		}
	}
	if st == nil {
		st = &State{Prefix: Prefix(dir)}
	}
	err = teardownDir(dir, st, logger)
	if purge {
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
	}
	return err
}

// teardownDir: CNI DEL of every workload whose agent still runs, stop every
// recorded process, kill whatever else runs in a namespace of the lab,
// delete the namespaces, remove the files (not the logs).
func teardownDir(dir string, st *State, log *slog.Logger) error {
	ctx := context.Background()
	prefix := st.Prefix
	if prefix == "" {
		prefix = Prefix(dir)
	}
	var errs []error

	delWorkloads(ctx, dir, st, log)

	// Agents first (they might still act on etcd), then BIRD, then etcd.
	procs := slices.Clone(st.Processes)
	slices.SortStableFunc(procs, func(a, b Proc) int { return procRank(a) - procRank(b) })
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stopProc(p, stopGrace); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	live, err := labNamespaces(ctx, prefix)
	if err != nil {
		errs = append(errs, err)
	}
	all := slices.Clone(st.Namespaces)
	for _, ns := range live {
		if !slices.Contains(all, ns) {
			all = append(all, ns)
		}
	}
	// Anything still running inside (a process the state missed, an
	// `exec` left behind) would keep its namespace alive after the name
	// is gone.
	for _, ns := range all {
		if err := killNamespacePids(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	// Workloads first, the fabric last, so that no veth is torn down under
	// a namespace that still routes over it.
	slices.Reverse(all)
	for _, ns := range all {
		if err := deleteNamespace(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeLabFiles(dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		log.Info("lab down", "dir", dir, "namespaces", len(all), "processes", len(procs))
	}
	return errors.Join(errs...)
}

func procRank(p Proc) int {
	switch {
	case strings.HasPrefix(p.Name, "agent-"):
		return 0
	case strings.HasPrefix(p.Name, "etcd"):
		return 2
	default:
		return 1
	}
}

// delWorkloads runs CNI DEL for every workload whose agent runs, in
// parallel and best effort: it releases their addresses and host routes the
// proper way. The namespaces go anyway.
func delWorkloads(ctx context.Context, dir string, st *State, log *slog.Logger) {
	l := &Lab{dir: dir, opts: st.Options, names: names{st.Prefix}, log: log}
	if l.opts.BinDir == "" {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, w := range st.Workloads {
		h, ok := st.host(w.Host)
		if !ok {
			continue
		}
		if p, ok := st.proc(agentProcName(h.Name)); !ok || !p.alive() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cni, list, err := l.cniFor(*h)
			if err != nil {
				return
			}
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := cni.DelNetworkList(dctx, list, cniRuntime(w)); err != nil {
				log.Warn("CNI DEL during down", "workload", w.Name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// labNamespaces lists the namespaces whose name starts with prefix.
func labNamespaces(ctx context.Context, prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// killNamespacePids kills every process inside a namespace (SIGTERM, then
// SIGKILL).
func killNamespacePids(ctx context.Context, ns string) error {
	if _, err := os.Stat(netnsPath(ns)); err != nil {
		return nil
	}
	out, err := run(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return fmt.Errorf("processes in %s: %w", ns, err)
	}
	var procs []Proc
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid == os.Getpid() {
			continue
		}
		t, err := procStartTicks(pid)
		if err != nil {
			continue
		}
		procs = append(procs, Proc{Name: "pid " + f + " in " + ns, PID: pid, StartTicks: t})
	}
	var errs []error
	for _, p := range procs {
		if err := stopProc(p, stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteNamespace deletes a namespace; a missing one is fine.
func deleteNamespace(ctx context.Context, ns string) error {
	if _, err := os.Stat(netnsPath(ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
		if _, statErr := os.Stat(netnsPath(ns)); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("deleting namespace: %w", err)
	}
	return nil
}
