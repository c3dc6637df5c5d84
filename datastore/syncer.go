package datastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType says what happened to a key.
type EventType int

const (
	EventAdd EventType = iota
	EventUpdate
	EventDelete
	// EventInSync marks the end of a (re)list: the consumer's view now
	// equals etcd at Revision. It is sent after the first list and after
	// every relist.
	EventInSync
)

func (t EventType) String() string {
	return [...]string{"add", "update", "delete", "in-sync"}[t]
}

// Event is one change, in etcd's order.
type Event struct {
	Type     EventType
	Key      string
	Value    any // decoded new value (nil on delete and in-sync)
	Prev     any // decoded previous value (update, delete)
	Revision int64
}

// Source is one key prefix the syncer follows and how to decode its values.
// Decode returning (nil, nil) skips the key.
type Source struct {
	Prefix string
	Decode func(key string, value []byte) (any, error)
	// Keep says what the syncer remembers of a value, to hand back as the
	// Prev of the key's next update or delete: nil keeps nothing (Prev is
	// nil; Key says what went), so that a consumer that holds only part
	// of the values (an agent, other nodes' endpoints) does not pay for
	// all of them twice. Nil Keep keeps every value.
	Keep func(value any) any
}

// kept is what src remembers of val.
func (src Source) kept(val any) any {
	if src.Keep == nil {
		return val
	}
	return src.Keep(val)
}

// ResourceSource follows every resource kind (not IPAM keys).
func ResourceSource() Source {
	return Source{Prefix: Prefix, Decode: func(key string, value []byte) (any, error) {
		kind, _, ok := ParseKey(key)
		if !ok {
			return nil, nil
		}
		return Decode(kind, value)
	}}
}

// Syncer lists the followed prefixes at one revision, then watches from the
// next; on compaction, disconnect or any watch failure it relists and emits
// only the difference from what it emitted before, then EventInSync.
type Syncer struct {
	etcd    *clientv3.Client
	sources []Source
	log     *slog.Logger
	// cache is what the consumer has been told: key -> (modRev, what the
	// source keeps of the value).
	cache map[string]cached
	// RetryInterval bounds the back-off between relists.
	RetryInterval time.Duration
	// live is set while the syncer follows etcd: from a completed list
	// until its watch fails. The watch requires a leader, so a cluster
	// that lost quorum ends it too.
	live atomic.Bool
	// undecodable is every key whose current value does not decode, with
	// the reason: the consumer keeps what it was told before (the syncer
	// neither updates nor deletes such a key), and readiness reports it.
	undecodableMu sync.Mutex
	undecodable   map[string]string
}

// Live reports whether the syncer follows etcd now: listed, and its watch
// (which needs a member with a leader) running.
func (s *Syncer) Live() bool { return s.live.Load() }

type cached struct {
	modRev int64
	value  any
}

// NewSyncer follows the sources. Prefixes must not nest inside each other
// unless the outer source's Decode skips the inner one's keys.
func NewSyncer(etcd *clientv3.Client, sources []Source, log *slog.Logger) *Syncer {
	return &Syncer{etcd: etcd, sources: sources, log: log, cache: map[string]cached{}, RetryInterval: 2 * time.Second,
		undecodable: map[string]string{}}
}

// Undecodable returns the keys whose value in etcd does not decode, each
// with the reason. The consumer still holds such a key's last good value
// (or none, if it never decoded): a bad write never becomes a delete.
func (s *Syncer) Undecodable() map[string]string {
	s.undecodableMu.Lock()
	defer s.undecodableMu.Unlock()
	out := make(map[string]string, len(s.undecodable))
	for k, v := range s.undecodable {
		out[k] = v
	}
	return out
}

// markUndecodable records key's decode failure and logs it once per
// change of reason.
func (s *Syncer) markUndecodable(key string, err error) {
	s.undecodableMu.Lock()
	old, had := s.undecodable[key]
	s.undecodable[key] = err.Error()
	s.undecodableMu.Unlock()
	if !had || old != err.Error() {
		_, kept := s.cache[key]
		s.log.Error("undecodable key; keeping its previous value", "key", key, "had_previous", kept, "err", err)
	}
}

// decoded forgets key's decode failure (it decoded, or went).
func (s *Syncer) decoded(key string) {
	s.undecodableMu.Lock()
	_, had := s.undecodable[key]
	delete(s.undecodable, key)
	s.undecodableMu.Unlock()
	if had {
		s.log.Info("key decodes again", "key", key)
	}
}

// Run delivers batches of events to handle until ctx ends. handle is called
// from this goroutine only, so events arrive in order.
func (s *Syncer) Run(ctx context.Context, handle func([]Event)) error {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := s.relist(ctx, handle)
		if err == nil {
			backoff = 50 * time.Millisecond
			s.live.Store(true)
			err = s.watch(ctx, rev, handle)
			s.live.Store(false)
		}
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("datastore sync interrupted; relisting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.RetryInterval)
	}
	return ctx.Err()
}

// relist reads every source at one revision and emits the difference.
func (s *Syncer) relist(ctx context.Context, handle func([]Event)) (int64, error) {
	seen := map[string]bool{}
	bad := map[string]bool{}
	var rev int64
	var events []Event
	for _, src := range s.sources {
		var err error
		rev, err = s.listPrefix(ctx, src.Prefix, rev, func(kv *mvccpb.KeyValue) {
			key := string(kv.Key)
			if s.ownerOf(key) != src.Prefix {
				return
			}
			val, err := src.Decode(key, kv.Value)
			if err != nil {
				// Not a delete: what the consumer has stays in force.
				seen[key], bad[key] = true, true
				s.markUndecodable(key, err)
				return
			}
			if val == nil {
				return
			}
			seen[key] = true
			s.decoded(key)
			old, had := s.cache[key]
			switch {
			case !had:
				events = append(events, Event{Type: EventAdd, Key: key, Value: val, Revision: kv.ModRevision})
			case old.modRev != kv.ModRevision:
				events = append(events, Event{Type: EventUpdate, Key: key, Value: val, Prev: old.value, Revision: kv.ModRevision})
			default:
				return
			}
			s.cache[key] = cached{kv.ModRevision, src.kept(val)}
		})
		if err != nil {
			return 0, err
		}
	}
	var gone []string
	for key := range s.cache {
		if !seen[key] {
			gone = append(gone, key)
		}
	}
	sort.Strings(gone)
	for _, key := range gone {
		events = append(events, Event{Type: EventDelete, Key: key, Prev: s.cache[key].value, Revision: rev})
		delete(s.cache, key)
	}
	// A key that did not decode and is gone from etcd is no problem now.
	for key := range s.Undecodable() {
		if !bad[key] {
			s.decoded(key)
		}
	}
	events = append(events, Event{Type: EventInSync, Revision: rev})
	handle(events)
	return rev, nil
}

// listPageSize bounds one range of a relist: one range of a prefix with
// 100k endpoints is a single response of ~80 MB held at once (500k: ~400
// MB); pages read at the list's revision are the same snapshot.
var listPageSize int64 = 1000

// testHookListPage sees the size of each page read.
var testHookListPage func(keys int)

// listPrefix reads every key under prefix at rev (0: now), a page at a
// time, and returns the revision read.
func (s *Syncer) listPrefix(ctx context.Context, prefix string, rev int64, each func(*mvccpb.KeyValue)) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := s.etcd.Get(lctx, from, opts...)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("listing %s: %w", prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		if testHookListPage != nil {
			testHookListPage(len(resp.Kvs))
		}
		for _, kv := range resp.Kvs {
			each(kv)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// ownerOf is the longest source prefix that holds key, so nested prefixes
// are decoded by the most specific source only.
func (s *Syncer) ownerOf(key string) string {
	best := ""
	for _, src := range s.sources {
		if strings.HasPrefix(key, src.Prefix) && len(src.Prefix) > len(best) {
			best = src.Prefix
		}
	}
	return best
}

func (s *Syncer) source(prefix string) Source {
	for _, src := range s.sources {
		if src.Prefix == prefix {
			return src
		}
	}
	return Source{}
}

// watch follows changes from rev+1 until the watch fails.
func (s *Syncer) watch(ctx context.Context, rev int64, handle func([]Event)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// One watch on the common prefix of every source keeps all changes in
	// one ordered stream.
	wch := s.etcd.Watch(wctx, commonPrefix(s.sources), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return fmt.Errorf("watch compacted at revision %d: %w", resp.CompactRevision, err)
			}
			return fmt.Errorf("watch: %w", err)
		}
		if resp.Canceled {
			return errors.New("watch canceled by the server")
		}
		var events []Event
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			owner := s.ownerOf(key)
			if owner == "" {
				continue
			}
			old, had := s.cache[key]
			if ev.Type == clientv3.EventTypeDelete {
				s.decoded(key)
				if had {
					events = append(events, Event{Type: EventDelete, Key: key, Prev: old.value, Revision: ev.Kv.ModRevision})
					delete(s.cache, key)
				}
				continue
			}
			val, err := s.source(owner).Decode(key, ev.Kv.Value)
			if err != nil {
				s.markUndecodable(key, err)
				continue
			}
			if val == nil {
				continue
			}
			s.decoded(key)
			if had {
				events = append(events, Event{Type: EventUpdate, Key: key, Value: val, Prev: old.value, Revision: ev.Kv.ModRevision})
			} else {
				events = append(events, Event{Type: EventAdd, Key: key, Value: val, Revision: ev.Kv.ModRevision})
			}
			s.cache[key] = cached{ev.Kv.ModRevision, s.source(owner).kept(val)}
		}
		if len(events) > 0 {
			handle(events)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed (etcd unreachable or restarted)")
}

func commonPrefix(sources []Source) string {
	if len(sources) == 0 {
		return Prefix
	}
	p := sources[0].Prefix
	for _, s := range sources[1:] {
		for !strings.HasPrefix(s.Prefix, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}
