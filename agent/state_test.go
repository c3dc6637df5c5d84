package agent

import (
	"net/netip"
	"testing"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
)

// Only what concerns this node asks for a recompute: in a cluster every
// change reaches every agent, and a recompute per remote change made a
// CNI ADD cost N recomputes.
func TestStateChangesConcernThisNodeOnly(t *testing.T) {
	wep := func(name, node string) *datastore.WorkloadEndpoint {
		return &datastore.WorkloadEndpoint{Metadata: datastore.Metadata{Name: name}, Spec: datastore.WorkloadEndpointSpec{Node: node}}
	}
	block := func(cidr, affinity string, borrowers ...string) *ipam.Block {
		b := &ipam.Block{Prefix: netip.MustParsePrefix(cidr), Affinity: affinity}
		for i, n := range borrowers {
			b.Allocations = append(b.Allocations, ipam.Allocation{IP: b.Prefix.Addr().Next(), Node: n, Borrowed: n != affinity, Handle: string(rune('a' + i))})
		}
		return b
	}
	for _, c := range []struct {
		name      string
		ev        datastore.Event
		endpoints bool
		blocks    bool
	}{
		{"own endpoint", datastore.Event{Type: datastore.EventAdd, Value: wep("a", "me")}, true, false},
		{"own endpoint deleted", datastore.Event{Type: datastore.EventDelete, Prev: wep("a", "me")}, true, false},
		{"remote endpoint", datastore.Event{Type: datastore.EventAdd, Value: wep("b", "other")}, false, false},
		{"remote endpoint deleted", datastore.Event{Type: datastore.EventDelete, Prev: wep("b", "other")}, false, false},
		{"own block", datastore.Event{Type: datastore.EventUpdate, Value: block("10.0.0.0/26", "me", "me"), Prev: block("10.0.0.0/26", "me")}, false, true},
		{"remote block allocating", datastore.Event{Type: datastore.EventUpdate, Value: block("10.0.1.0/26", "other", "other"), Prev: block("10.0.1.0/26", "other")}, false, false},
		{"remote block lending to me", datastore.Event{Type: datastore.EventUpdate, Value: block("10.0.1.0/26", "other", "me"), Prev: block("10.0.1.0/26", "other")}, false, true},
		{"remote block taking back my borrowed address", datastore.Event{Type: datastore.EventUpdate, Value: block("10.0.1.0/26", "other"), Prev: block("10.0.1.0/26", "other", "me")}, false, true},
		{"my block released", datastore.Event{Type: datastore.EventDelete, Prev: block("10.0.0.0/26", "me")}, false, true},
		{"my block given to another", datastore.Event{Type: datastore.EventUpdate, Value: block("10.0.0.0/26", "other"), Prev: block("10.0.0.0/26", "me")}, false, true},
	} {
		s := newClusterState("me")
		var ch changes
		s.apply(c.ev, &ch)
		if ch.endpoints != c.endpoints || ch.blocks != c.blocks {
			t.Errorf("%s: endpoints %v blocks %v, want %v %v", c.name, ch.endpoints, ch.blocks, c.endpoints, c.blocks)
		}
	}
	// The state keeps this node's endpoints only (policy keeps what it
	// needs of the others).
	s := newClusterState("me")
	var ch changes
	s.apply(datastore.Event{Type: datastore.EventAdd, Value: wep("b", "other")}, &ch)
	s.apply(datastore.Event{Type: datastore.EventAdd, Value: wep("a", "me")}, &ch)
	if s.endpoints["b"] != nil || s.endpoints["a"] == nil {
		t.Errorf("endpoints kept: %v, want a alone", s.endpoints)
	}
	// An endpoint moved to another node leaves.
	s.apply(datastore.Event{Type: datastore.EventUpdate, Value: wep("a", "other"), Prev: wep("a", "me")}, &ch)
	if s.endpoints["a"] != nil {
		t.Error("an endpoint moved to another node is still kept")
	}
}

// The syncer keeps nothing of endpoints; their deletes come with the key
// alone, and withPrev stands in a stub named after it, which removes this
// node's endpoint and asks for a recompute.
func TestEndpointDeleteWithoutPrev(t *testing.T) {
	src := agentResourceSource()
	w := &datastore.WorkloadEndpoint{Metadata: datastore.Metadata{Name: "me-c1-eth0"}, Spec: datastore.WorkloadEndpointSpec{Node: "me"}}
	if kept := src.Keep(w); kept != nil {
		t.Errorf("the syncer keeps %v of an endpoint, want nothing", kept)
	}
	pool := &datastore.IPPool{}
	if kept := src.Keep(pool); kept != pool {
		t.Error("the syncer does not keep a pool")
	}
	s := newClusterState("me")
	var ch changes
	s.apply(datastore.Event{Type: datastore.EventAdd, Value: w}, &ch)
	key := datastore.Key(datastore.KindWorkloadEndpoint, w.Metadata.Name)
	ev := withPrev(datastore.Event{Type: datastore.EventDelete, Key: key})
	stub, ok := ev.Prev.(*datastore.WorkloadEndpoint)
	if !ok || stub.Metadata.Name != w.Metadata.Name {
		t.Fatalf("withPrev: Prev %#v, want an endpoint named %s", ev.Prev, w.Metadata.Name)
	}
	ch = changes{}
	s.apply(ev, &ch)
	if s.endpoints[w.Metadata.Name] != nil || !ch.endpoints {
		t.Errorf("after the delete: kept %v, recompute %v; want gone and a recompute", s.endpoints, ch.endpoints)
	}
	if ev := withPrev(datastore.Event{Type: datastore.EventDelete, Key: datastore.Key(datastore.KindIPPool, "p")}); ev.Prev != nil {
		t.Errorf("withPrev made up a Prev %v for a pool", ev.Prev)
	}
}
