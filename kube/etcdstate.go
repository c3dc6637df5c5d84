package kube

import (
	"strconv"
	"sync"

	"github.com/calyx-net/calyx/datastore"
)

// etcdState is the controllers' view of the Calyx kinds they read:
// Policies, Profiles, WorkloadEndpoints and Nodes, kept by a syncer.
type etcdState struct {
	mu      sync.Mutex
	objs    map[datastore.Kind]map[string]datastore.Resource
	byPod   map[string]map[string]bool // "ns/pod" -> endpoint names
	inSync  bool
	watched []datastore.Kind
}

func newEtcdState() *etcdState {
	s := &etcdState{
		objs:    map[datastore.Kind]map[string]datastore.Resource{},
		byPod:   map[string]map[string]bool{},
		watched: []datastore.Kind{datastore.KindPolicy, datastore.KindProfile, datastore.KindWorkloadEndpoint, datastore.KindNode},
	}
	for _, k := range s.watched {
		s.objs[k] = map[string]datastore.Resource{}
	}
	return s
}

func (s *etcdState) sources() []datastore.Source {
	var out []datastore.Source
	for _, k := range s.watched {
		out = append(out, datastore.Source{Prefix: datastore.KindPrefix(k), Decode: func(_ string, v []byte) (any, error) {
			return datastore.Decode(k, v)
		}})
	}
	return out
}

// apply takes a syncer batch, calling changed for every object added or
// updated (deletions of ours are followed by the informer side). It
// reports whether the batch ended a (re)list.
func (s *etcdState) apply(evs []datastore.Event, changed func(datastore.Resource)) bool {
	var touched []datastore.Resource
	inSync := false
	s.mu.Lock()
	for _, ev := range evs {
		switch ev.Type {
		case datastore.EventInSync:
			s.inSync, inSync = true, true
		case datastore.EventDelete:
			if r, ok := ev.Prev.(datastore.Resource); ok {
				s.removeLocked(r.GetKind(), r.GetMeta().Name)
				touched = append(touched, r)
			}
		default:
			if r, ok := ev.Value.(datastore.Resource); ok {
				// The revision, for conditional writes (applyOwned).
				r.GetMeta().ResourceVersion = strconv.FormatInt(ev.Revision, 10)
				s.putLocked(r)
				touched = append(touched, r)
			}
		}
	}
	s.mu.Unlock()
	for _, r := range touched {
		changed(r)
	}
	return inSync
}

func (s *etcdState) get(kind datastore.Kind, name string) datastore.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objs[kind][name]
}

func (s *etcdState) list(kind datastore.Kind) []datastore.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]datastore.Resource, 0, len(s.objs[kind]))
	for _, r := range s.objs[kind] {
		out = append(out, r)
	}
	return out
}

// endpointsOf lists the endpoints of pod "ns/name".
func (s *etcdState) endpointsOf(podKey string) []*datastore.WorkloadEndpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*datastore.WorkloadEndpoint
	for name := range s.byPod[podKey] {
		out = append(out, s.objs[datastore.KindWorkloadEndpoint][name].(*datastore.WorkloadEndpoint))
	}
	return out
}

func (s *etcdState) put(r datastore.Resource) {
	s.mu.Lock()
	s.putLocked(r)
	s.mu.Unlock()
}

func (s *etcdState) remove(kind datastore.Kind, name string) {
	s.mu.Lock()
	s.removeLocked(kind, name)
	s.mu.Unlock()
}

func (s *etcdState) putLocked(r datastore.Resource) {
	name := r.GetMeta().Name
	s.removeLocked(r.GetKind(), name)
	s.objs[r.GetKind()][name] = r
	if w, ok := r.(*datastore.WorkloadEndpoint); ok {
		if key, ok := podKeyOf(w); ok {
			if s.byPod[key] == nil {
				s.byPod[key] = map[string]bool{}
			}
			s.byPod[key][name] = true
		}
	}
}

func (s *etcdState) removeLocked(kind datastore.Kind, name string) {
	old, ok := s.objs[kind][name]
	if !ok {
		return
	}
	delete(s.objs[kind], name)
	if w, ok := old.(*datastore.WorkloadEndpoint); ok {
		if key, ok := podKeyOf(w); ok {
			delete(s.byPod[key], name)
			if len(s.byPod[key]) == 0 {
				delete(s.byPod, key)
			}
		}
	}
}
