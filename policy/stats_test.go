package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// The counters the agent's metrics read: OnApply after each Apply that
// wrote or failed (not after one with nothing to do), iptables-restore runs
// by family and outcome, and the sets and members in the kernel.
func TestStatsAndOnApply(t *testing.T) {
	k := &fakeKernel{}
	var calls []error
	d, err := NewWithRunner(Config{NodeName: "node-a", IPv6: true, OnApply: func(took time.Duration, err error) {
		if took <= 0 {
			t.Errorf("OnApply with duration %v", took)
		}
		calls = append(calls, err)
	}}, nil, k)
	if err != nil {
		t.Fatal(err)
	}
	d.SetEndpoint(testEndpoint("db", "cxdb", "10.244.0.3/32", map[string]string{"app": "db"}))
	d.SetEndpoint(testEndpoint("web", "cxweb", "10.244.0.2/32", map[string]string{"app": "web"}))
	d.SetPolicy(dbIngress())
	ctx := context.Background()
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	s := d.Stats()
	if len(calls) != 1 || calls[0] != nil {
		t.Fatalf("OnApply calls after the first Apply: %v", calls)
	}
	if s.RestoresV4.OK != 1 || s.RestoresV6.OK != 1 || s.RestoresV4.Failed+s.RestoresV6.Failed != 0 {
		t.Errorf("restores v4 %+v v6 %+v", s.RestoresV4, s.RestoresV6)
	}
	if s.Sets == 0 || s.SetMembers == 0 {
		t.Errorf("sets %d, members %d after programming an endpoint", s.Sets, s.SetMembers)
	}
	if err := d.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 {
		t.Errorf("OnApply called for an Apply with nothing to write")
	}

	k.fail = func(argv []string) error {
		if strings.HasPrefix(argv[0], "ip6tables-restore") {
			return errors.New("boom")
		}
		return nil
	}
	d.DeletePolicy("db-ingress")
	if err := d.Apply(ctx); err == nil {
		t.Fatal("Apply succeeded with ip6tables-restore failing")
	}
	s = d.Stats()
	if s.RestoresV6.Failed != 1 || s.RestoresV4.OK != 2 {
		t.Errorf("after a failed IPv6 restore: v4 %+v v6 %+v", s.RestoresV4, s.RestoresV6)
	}
	if len(calls) != 2 || calls[1] == nil {
		t.Errorf("OnApply calls: %v", calls)
	}
}
