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
	// The state holds remote endpoints all the same (policy selects them).
	s := newClusterState("me")
	var ch changes
	s.apply(datastore.Event{Type: datastore.EventAdd, Value: wep("b", "other")}, &ch)
	if s.endpoints["b"] == nil {
		t.Error("a remote endpoint is not kept")
	}
}
