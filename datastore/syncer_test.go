package datastore_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/etcdtest"
	"github.com/calyx-net/calyx/internal/testutil"
)

// recorder collects syncer events for assertions.
type recorder struct {
	mu     sync.Mutex
	events []datastore.Event
	synced int
}

func (r *recorder) handle(evs []datastore.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evs {
		if e.Type == datastore.EventInSync {
			r.synced++
			continue
		}
		r.events = append(r.events, e)
	}
}

func (r *recorder) snapshot() ([]datastore.Event, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]datastore.Event(nil), r.events...), r.synced
}

// waitFor polls until cond holds on the recorded events.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]datastore.Event, int) bool) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, what, func() error {
		evs, synced := r.snapshot()
		if cond(evs, synced) {
			return nil
		}
		return fmt.Errorf("have %d events, %d in-syncs: %s", len(evs), synced, describe(evs))
	})
}

func describe(evs []datastore.Event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("\n  %s %s", e.Type, e.Key)
	}
	return s
}

func runSyncer(t *testing.T, s *datastore.Syncer, r *recorder) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, r.handle); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return func() { cancel(); <-done }
}

func TestSyncerListThenWatchInOrder(t *testing.T) {
	e := etcdtest.Start(t)
	c := newClient(t, e.Endpoint)
	ctx := context.Background()
	c.Create(ctx, pool("before", "10.1.0.0/16"))

	r := &recorder{}
	runSyncer(t, datastore.NewSyncer(c.Etcd(), []datastore.Source{datastore.ResourceSource()}, slog.Default()), r)
	r.waitFor(t, "initial list", func(evs []datastore.Event, synced int) bool { return synced == 1 })
	evs, _ := r.snapshot()
	if len(evs) != 1 || evs[0].Type != datastore.EventAdd || evs[0].Value.(*datastore.IPPool).Spec.CIDR != "10.1.0.0/16" {
		t.Fatalf("initial list: %s", describe(evs))
	}

	// A burst of changes arrives in order, typed, with the previous value.
	for i := 0; i < 20; i++ {
		c.Apply(ctx, pool(fmt.Sprintf("p%02d", i), fmt.Sprintf("10.%d.0.0/16", 100+i)))
	}
	p := pool("before", "10.1.0.0/16")
	p.Spec.NATOutgoing = true
	c.Apply(ctx, p)
	c.Delete(ctx, datastore.KindIPPool, "p05")
	r.waitFor(t, "burst", func(evs []datastore.Event, _ int) bool { return len(evs) == 23 })
	evs, _ = r.snapshot()
	for i := 0; i < 20; i++ {
		if e := evs[1+i]; e.Type != datastore.EventAdd || e.Key != datastore.Key(datastore.KindIPPool, fmt.Sprintf("p%02d", i)) {
			t.Fatalf("event %d out of order: %s %s", 1+i, e.Type, e.Key)
		}
	}
	upd := evs[21]
	if upd.Type != datastore.EventUpdate || !upd.Value.(*datastore.IPPool).Spec.NATOutgoing || upd.Prev.(*datastore.IPPool).Spec.NATOutgoing {
		t.Errorf("update event wrong: %+v", upd)
	}
	if del := evs[22]; del.Type != datastore.EventDelete || del.Prev == nil {
		t.Errorf("delete event wrong: %+v", del)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Revision < evs[i-1].Revision {
			t.Errorf("revisions go backwards at %d", i)
		}
	}
}

// After missing changes (the syncer was stopped and history compacted), a
// relist emits only the difference from what the consumer already has.
func TestSyncerRelistAfterCompactionEmitsOnlyTheDifference(t *testing.T) {
	e := etcdtest.Start(t)
	c := newClient(t, e.Endpoint)
	ctx := context.Background()
	for _, n := range []string{"keep", "change", "remove"} {
		c.Create(ctx, pool(n, map[string]string{"keep": "10.1.0.0/16", "change": "10.2.0.0/16", "remove": "10.3.0.0/16"}[n]))
	}
	s := datastore.NewSyncer(c.Etcd(), []datastore.Source{datastore.ResourceSource()}, slog.Default())
	r := &recorder{}
	stop := runSyncer(t, s, r)
	r.waitFor(t, "initial list", func(evs []datastore.Event, synced int) bool { return synced == 1 && len(evs) == 3 })
	stop()

	p := pool("change", "10.2.0.0/16")
	p.Spec.Disabled = true
	c.Apply(ctx, p)
	c.Delete(ctx, datastore.KindIPPool, "remove")
	c.Create(ctx, pool("added", "10.4.0.0/16"))
	resp, _ := c.Etcd().Get(ctx, "x")
	if _, err := c.Etcd().Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}

	runSyncer(t, s, r)
	r.waitFor(t, "relist", func(evs []datastore.Event, synced int) bool { return synced == 2 })
	evs, _ := r.snapshot()
	got := map[string]datastore.EventType{}
	for _, e := range evs[3:] {
		got[e.Key] = e.Type
	}
	want := map[string]datastore.EventType{
		datastore.Key(datastore.KindIPPool, "change"): datastore.EventUpdate,
		datastore.Key(datastore.KindIPPool, "remove"): datastore.EventDelete,
		datastore.Key(datastore.KindIPPool, "added"):  datastore.EventAdd,
	}
	if len(got) != len(want) || len(evs[3:]) != 3 {
		t.Fatalf("relist emitted %s; want only change/remove/added", describe(evs[3:]))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v want %v", k, got[k], v)
		}
	}
}

// A watch from a compacted revision fails, and Run recovers by relisting.
func TestSyncerRecoversFromCompactedWatch(t *testing.T) {
	e := etcdtest.Start(t)
	cli := e.Client(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		cli.Put(ctx, datastore.Key(datastore.KindIPPool, "p"), `{"apiVersion":"calyx.dev/v1","kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":"10.9.0.0/16"}}`)
	}
	resp, _ := cli.Get(ctx, "x")
	cli.Compact(ctx, resp.Header.Revision)
	wch := cli.Watch(ctx, datastore.Prefix, clientv3.WithPrefix(), clientv3.WithRev(2))
	w := <-wch
	if w.Err() == nil {
		t.Fatal("watch from a compacted revision did not fail; the syncer's compaction path is untested")
	}
	r := &recorder{}
	runSyncer(t, datastore.NewSyncer(cli, []datastore.Source{datastore.ResourceSource()}, slog.Default()), r)
	r.waitFor(t, "list", func(evs []datastore.Event, synced int) bool { return synced >= 1 && len(evs) == 1 })
}

// etcd restarts (same data, same port): the syncer keeps going and delivers
// the changes made after it came back.
func TestSyncerSurvivesEtcdRestart(t *testing.T) {
	dir := t.TempDir()
	url := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	e := etcdtest.StartIn(t, dir, url)
	c := newClient(t, url)
	ctx := context.Background()
	c.Create(ctx, pool("first", "10.1.0.0/16"))
	s := datastore.NewSyncer(c.Etcd(), []datastore.Source{datastore.ResourceSource()}, slog.Default())
	s.RetryInterval = 200 * time.Millisecond
	r := &recorder{}
	runSyncer(t, s, r)
	r.waitFor(t, "initial list", func(evs []datastore.Event, synced int) bool { return synced == 1 && len(evs) == 1 })

	e.Server.Close()
	time.Sleep(300 * time.Millisecond)
	etcdtest.StartIn(t, dir, url)

	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := c.Create(wctx, pool("second", "10.2.0.0/16")); err != nil {
		t.Fatal(err)
	}
	c.Delete(wctx, datastore.KindIPPool, "first")
	r.waitFor(t, "changes after restart", func(evs []datastore.Event, _ int) bool {
		var added, deleted bool
		for _, e := range evs {
			added = added || (e.Type == datastore.EventAdd && e.Key == datastore.Key(datastore.KindIPPool, "second"))
			deleted = deleted || (e.Type == datastore.EventDelete && e.Key == datastore.Key(datastore.KindIPPool, "first"))
		}
		return added && deleted
	})
	// No duplicates: "first" was added exactly once.
	evs, _ := r.snapshot()
	n := 0
	for _, e := range evs {
		if e.Type == datastore.EventAdd && e.Key == datastore.Key(datastore.KindIPPool, "first") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("first added %d times across the restart", n)
	}
}

// A source whose Keep keeps nothing gives its updates and deletes no
// Prev, only the key; the values themselves still arrive whole.
func TestSyncerKeepNothing(t *testing.T) {
	e := etcdtest.Start(t)
	c := newClient(t, e.Endpoint)
	ctx := context.Background()
	c.Create(ctx, pool("listed", "10.1.0.0/16"))
	src := datastore.ResourceSource()
	src.Keep = func(any) any { return nil }
	r := &recorder{}
	runSyncer(t, datastore.NewSyncer(c.Etcd(), []datastore.Source{src}, slog.Default()), r)
	r.waitFor(t, "initial list", func(_ []datastore.Event, synced int) bool { return synced == 1 })
	p := pool("listed", "10.1.0.0/16")
	p.Spec.NATOutgoing = true
	c.Apply(ctx, p)
	c.Delete(ctx, datastore.KindIPPool, "listed")
	r.waitFor(t, "update and delete", func(evs []datastore.Event, _ int) bool { return len(evs) == 3 })
	evs, _ := r.snapshot()
	if upd := evs[1]; upd.Type != datastore.EventUpdate || !upd.Value.(*datastore.IPPool).Spec.NATOutgoing || upd.Prev != nil {
		t.Errorf("update: %+v, want the new value and no Prev", upd)
	}
	if del := evs[2]; del.Type != datastore.EventDelete || del.Prev != nil || del.Key != datastore.Key(datastore.KindIPPool, "listed") {
		t.Errorf("delete: %+v, want the key and no Prev", del)
	}
}

// A list longer than a page is read page by page at one revision: every
// key arrives once, in one batch with the in-sync, and a change made
// after the list still comes as a watch event.
func TestSyncerListsInPages(t *testing.T) {
	t.Cleanup(datastore.SetListPageSize(4))
	var mu sync.Mutex
	var pages []int
	t.Cleanup(datastore.OnListPage(func(n int) { mu.Lock(); pages = append(pages, n); mu.Unlock() }))
	e := etcdtest.Start(t)
	c := newClient(t, e.Endpoint)
	ctx := context.Background()
	for i := range 11 {
		c.Create(ctx, pool(fmt.Sprintf("p%02d", i), fmt.Sprintf("10.%d.0.0/16", 100+i)))
	}
	r := &recorder{}
	runSyncer(t, datastore.NewSyncer(c.Etcd(), []datastore.Source{datastore.ResourceSource()}, slog.Default()), r)
	r.waitFor(t, "initial list", func(_ []datastore.Event, synced int) bool { return synced == 1 })
	evs, _ := r.snapshot()
	if len(evs) != 11 {
		t.Fatalf("listed %d keys, want 11: %s", len(evs), describe(evs))
	}
	mu.Lock()
	if !slices.Equal(pages, []int{4, 4, 3}) {
		t.Errorf("pages of %v keys, want [4 4 3]", pages)
	}
	mu.Unlock()
	for i, ev := range evs {
		if want := datastore.Key(datastore.KindIPPool, fmt.Sprintf("p%02d", i)); ev.Type != datastore.EventAdd || ev.Key != want {
			t.Errorf("event %d: %s %s, want add %s", i, ev.Type, ev.Key, want)
		}
	}
	c.Create(ctx, pool("after", "10.200.0.0/16"))
	r.waitFor(t, "the watch after the list", func(evs []datastore.Event, _ int) bool { return len(evs) == 12 })
}

// A key the consumer holds that no longer decodes is neither updated nor
// deleted, by the watch or by a relist: a garbage write over a policy must
// not remove it (that would open traffic). The key is reported until it
// decodes again or is deleted.
func TestSyncerKeepsUndecodableKey(t *testing.T) {
	e := etcdtest.Start(t)
	c := newClient(t, e.Endpoint)
	ctx := context.Background()
	c.Create(ctx, pool("good", "10.1.0.0/16"))
	c.Create(ctx, pool("spoiled", "10.2.0.0/16"))
	s := datastore.NewSyncer(c.Etcd(), []datastore.Source{datastore.ResourceSource()}, slog.Default())
	r := &recorder{}
	stop := runSyncer(t, s, r)
	r.waitFor(t, "initial list", func(evs []datastore.Event, synced int) bool { return synced == 1 && len(evs) == 2 })
	spoiled := datastore.Key(datastore.KindIPPool, "spoiled")
	neverGood := datastore.Key(datastore.KindIPPool, "never-good")

	// Through the watch.
	c.Etcd().Put(ctx, spoiled, "\x00garbage{")
	c.Etcd().Put(ctx, neverGood, "not json")
	testutil.Eventually(t, 10*time.Second, "both keys reported", func() error {
		if u := s.Undecodable(); len(u) != 2 || u[spoiled] == "" || u[neverGood] == "" {
			return fmt.Errorf("undecodable: %v", u)
		}
		return nil
	})

	// Through a relist (the watch lost, history compacted).
	stop()
	resp, _ := c.Etcd().Get(ctx, "x")
	if _, err := c.Etcd().Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	stop = runSyncer(t, s, r)
	r.waitFor(t, "relist", func(_ []datastore.Event, synced int) bool { return synced == 2 })
	if evs, _ := r.snapshot(); len(evs) != 2 {
		t.Fatalf("events after the garbage writes: %s; want none (the consumer keeps the last good value)", describe(evs[2:]))
	}
	if u := s.Undecodable(); len(u) != 2 || !strings.Contains(u[spoiled], "decoding IPPool") {
		t.Errorf("undecodable after the relist: %v", u)
	}

	// Fixed: an update, and no longer reported; deleted: no longer reported.
	fixed, _ := datastore.Encode(pool("spoiled", "10.3.0.0/16"))
	c.Etcd().Put(ctx, spoiled, string(fixed))
	c.Etcd().Delete(ctx, neverGood)
	r.waitFor(t, "the fix", func(evs []datastore.Event, _ int) bool { return len(evs) == 3 })
	evs, _ := r.snapshot()
	if upd := evs[2]; upd.Type != datastore.EventUpdate || upd.Value.(*datastore.IPPool).Spec.CIDR != "10.3.0.0/16" || upd.Prev.(*datastore.IPPool).Spec.CIDR != "10.2.0.0/16" {
		t.Errorf("after the fix: %+v, want an update from the last good value", upd)
	}
	testutil.Eventually(t, 10*time.Second, "nothing reported", func() error {
		if u := s.Undecodable(); len(u) != 0 {
			return fmt.Errorf("undecodable: %v", u)
		}
		return nil
	})

	// A bad key deleted while the syncer was away is forgotten by the relist.
	c.Etcd().Put(ctx, neverGood, "not json")
	testutil.Eventually(t, 10*time.Second, "reported again", func() error {
		if len(s.Undecodable()) != 1 {
			return fmt.Errorf("undecodable: %v", s.Undecodable())
		}
		return nil
	})
	stop()
	c.Etcd().Delete(ctx, neverGood)
	runSyncer(t, s, r)
	r.waitFor(t, "relist", func(_ []datastore.Event, synced int) bool { return synced == 3 })
	if u := s.Undecodable(); len(u) != 0 {
		t.Errorf("undecodable after a relist without the key: %v", u)
	}
}
